"""extract_features() and the on-disk feature cache.

The cache key is a hash of everything that changes the features: the weights, the architecture, the feature mode,
the transform, the dataset (name, root, split, size) and the precision. Entries are written atomically, so a
half-written file never has the final name, and an entry whose row count disagrees with the dataset is ignored.

`DIR/<split>.npz` (`features` N×D float32, `labels` N int64 or N×C for multi-label) plus `DIR/meta.json` is also
the public format that `--features DIR` reads, so features from any framework can be evaluated.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ._io import atomic_save_npz, atomic_write_json, sha256_file, sha256_json
from .backbones import Backbone
from .data import IndexedDataset
from .errors import DataError, NonFiniteError
from .precision import Precision

__all__ = ["FeatureSet", "extract_features", "load_feature_split", "save_feature_split", "write_cache_entry",
           "FEATURE_CACHE_VERSION", "check_feature_arrays", "MAX_CLASSES"]

_logger = logging.getLogger(__name__)
FEATURE_CACHE_VERSION = 2   # 2: each entry's meta carries its key fields and the sha256 of its .npz


@dataclass
class FeatureSet:
    features: np.ndarray                  # (N, D) float32
    labels: np.ndarray                    # (N,) int64, or (N, C) for multi-label targets
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)


def save_feature_split(directory: Path, split: str, fs: FeatureSet) -> Path:
    return atomic_save_npz(Path(directory) / f"{split}.npz", features=fs.features.astype(np.float32, copy=False),
                           labels=fs.labels)


def load_feature_split(directory: Path, split: str, *, mmap: bool = False) -> FeatureSet:
    """Read `<directory>/<split>.npz`; a clear error names the file when it is missing or malformed.

    Features come back as float32 in memory, or with `mmap` as a read-only memory map of the file in its own dtype
    (e.g. float16) when the member is stored uncompressed (np.savez, bench's own writer), so a caller that reads
    rows in chunks (k-NN) never holds a second copy of the matrix. Compressed members are read whole."""
    path = Path(directory) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: feature file not found; `bench extract --split {split} --out {directory}` "
                        f"writes it, or give {split}.npz with arrays 'features' (N×D) and 'labels' (N)")
    try:
        feats = _npz_member_memmap(path, "features") if mmap else None
        with np.load(path) as z:
            labels = z["labels"]
            if feats is None:
                feats = z["features"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a feature file with arrays 'features' and 'labels' ({e})") from e
    if feats.ndim != 2 or len(labels) != len(feats):
        raise DataError(f"{path}: 'features' must be N×D and 'labels' must have N rows "
                        f"(got {feats.shape} and {labels.shape})")
    check_feature_arrays(path, feats, labels)
    meta_path = Path(directory) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if not isinstance(feats, np.memmap):
        feats = feats.astype(np.float32, copy=False)
    return FeatureSet(feats, labels, meta)


def _npz_member_memmap(path: Path, name: str) -> np.ndarray | None:
    """A read-only np.memmap of member `name` of an .npz when it is stored uncompressed, else None.

    An uncompressed zip member is the .npy file byte for byte at a fixed offset: the local header (30 bytes, then
    the file name and an extra field whose lengths it gives) precedes it, then the .npy header, then the data."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {name}.npy has no local zip header")
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject or not shape or 0 in shape:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


# Far above any labelled set bench evaluates (ImageNet-21k has 21,841 classes); a larger label is a corrupt file,
# and taken at face value it would size per-class arrays by it (label 1e9 → a 120 GB allocation).
MAX_CLASSES = 100_000


def check_feature_arrays(path: Path, feats: np.ndarray, labels: np.ndarray) -> None:
    """A `--features` file is read as numbers only if they mean something: finite float features, integer labels
    (N class indices in [0, MAX_CLASSES), or N×C multi-label entries in {-1, 0, 1} as VOC's devkit writes them)."""
    if not np.issubdtype(feats.dtype, np.number) or np.issubdtype(feats.dtype, np.complexfloating):
        raise DataError(f"{path}: 'features' must be real numbers, got dtype {feats.dtype}; re-export them")
    # in row chunks: a full N×D boolean temporary would be another copy of a 1.28M-row matrix
    step, bad = max(1, (1 << 24) // max(1, int(np.prod(feats.shape[1:])))), 0
    for start in range(0, len(feats), step):
        block = feats[start:start + step]
        bad += int((~np.isfinite(block)).reshape(len(block), -1).any(axis=1).sum())
    if bad:
        raise NonFiniteError(f"{path}: {bad} of {len(feats)} feature rows hold NaN or Inf; re-extract them (a "
                             f"diverged or fp16-overflowed backbone) — no number is computed from them")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise DataError(f"{path}: 'labels' must be integers, got dtype {labels.dtype}; save them as int64 class "
                        f"indices (e.g. labels.astype(np.int64) after checking they are whole numbers)")
    if labels.ndim == 1 and labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= MAX_CLASSES:
            raise DataError(f"{path}: 'labels' must be class indices in [0, {MAX_CLASSES}), got values from {lo} "
                            f"to {hi}; renumber the classes 0..C-1")
    elif labels.ndim == 2 and labels.size and not np.isin(labels, (-1, 0, 1)).all():
        raise DataError(f"{path}: multi-label 'labels' (N×C) must hold 1 (positive), -1 (negative) or 0 (difficult)")
    elif labels.ndim not in (1, 2):
        raise DataError(f"{path}: 'labels' must be N class indices or N×C multi-label entries, got shape "
                        f"{labels.shape}")


def _cache_key(backbone: Backbone, key_fields: dict[str, Any]) -> str:
    return sha256_json({"v": FEATURE_CACHE_VERSION, "weights": backbone.weights_id, "arch": backbone.report.arch,
                        **key_fields})[:24]


def _targets_array(targets: list) -> np.ndarray:
    arr = np.asarray(targets)
    return arr.astype(np.int64) if arr.ndim == 1 else arr


def _decoded_in_threads(samples: Dataset, batch_size: int, threads: int):
    """CPU extraction's loader: each batch decoded by a pool of threads in this process, then the forward pass, in
    turn. PIL's decode and resize and torch's tensor ops release the GIL, so the threads use every core; worker
    processes would instead decode while the forward pass runs and fight its threads for the same cores
    (resnet18 at 224 px on 2 cores: 0.67 of the bare forward with 2 DataLoader workers, 0.82 this way; the
    bound set by the decode's own CPU time is 0.89, docs/performance.md). Same samples, same batches, same
    collation as the DataLoader, so the features are identical."""
    from concurrent.futures import ThreadPoolExecutor
    from torch.utils.data import default_collate
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="bench-decode") as pool:
        for start in range(0, len(samples), batch_size):
            yield default_collate(list(pool.map(samples.__getitem__, range(start, min(start + batch_size,
                                                                                         len(samples))))))


@torch.inference_mode()
def _run_extraction(backbone: Backbone, dataset: Dataset, feature_mode: str, *, batch_size: int, workers: int,
                    device: torch.device, desc: str, amp: Precision | None = None,
                    shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, features, targets) of this process's shard: samples rank, rank + world, ... (no padding)."""
    from tqdm.auto import tqdm
    rank, world = shard
    # channels_last on every device: same outputs (to 1e-7), and on the CPU resnet50's forward took 1.4× less
    # CPU time with it (docs/performance.md); a ViT only sees it in its patch-embedding convolution
    model = backbone.model.to(device).eval().to(memory_format=torch.channels_last)
    own = np.arange(rank, len(dataset), world)
    samples = Subset(IndexedDataset(dataset), own.tolist())
    if device.type == "cpu":
        loader = _decoded_in_threads(samples, batch_size, threads=workers or torch.get_num_threads())
    else:
        loader = DataLoader(samples, batch_size=batch_size, num_workers=workers, shuffle=False,
                            pin_memory=device.type == "cuda", persistent_workers=False)
    feats: np.ndarray | None = None
    targets: list = [None] * len(own)
    pos = {int(g): i for i, g in enumerate(own)}
    filled = np.zeros(len(own), dtype=bool)
    for images, target, index in tqdm(loader, desc=desc, unit="batch", leave=False,
                                      total=-(-len(samples) // batch_size),
                                      disable=os.environ.get("BENCH_PROGRESS", "1") == "0" or rank != 0):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with (amp or Precision(device.type)).autocast():
            out = backbone.features(images, feature_mode).float()
        if not torch.isfinite(out).all():
            raise NonFiniteError(f"{desc}: non-finite features in batch starting at sample {int(index[0])}; "
                                 f"check the checkpoint and the preprocessing")
        if feats is None:
            feats = np.empty((len(own), out.shape[1]), dtype=np.float32)
        rows = np.array([pos[int(i)] for i in index])
        feats[rows] = out.cpu().numpy()
        filled[rows] = True
        for r, t in zip(rows, target.numpy()):
            targets[r] = t
    if len(own) and (feats is None or not filled.all()):
        raise DataError(f"{desc}: {int((~filled).sum())} of {len(own)} samples were never extracted")
    if feats is None:
        feats = np.empty((0, 0), dtype=np.float32)
    return own, feats, _targets_array(targets) if targets else np.empty(0, dtype=np.int64)


def _gather_shards(entry: Path, split: str, n: int, own: np.ndarray, feats: np.ndarray,
                   targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every rank writes its shard beside the cache entry; rank 0 stitches them by index; all read the result.

    Files rather than collectives: it works for gloo and nccl alike and never holds N×D twice in GPU memory.
    """
    from . import distributed as dd
    rank, world = dd.rank(), dd.world_size()
    atomic_save_npz(entry / f"{split}.shard{rank}of{world}.npz", index=own, features=feats, labels=targets)
    dd.barrier()
    if rank == 0:
        parts = [np.load(entry / f"{split}.shard{r}of{world}.npz") for r in range(world)]
        dim = max(p["features"].shape[1] for p in parts if len(p["index"]))
        all_feats = np.empty((n, dim), dtype=np.float32)
        label_shape = next(p["labels"].shape[1:] for p in parts if len(p["index"]))
        all_labels = np.empty((n, *label_shape), dtype=next(p["labels"].dtype for p in parts if len(p["index"])))
        seen = np.zeros(n, dtype=int)
        for p in parts:
            if len(p["index"]):
                all_feats[p["index"]], all_labels[p["index"]] = p["features"], p["labels"]
                seen[p["index"]] += 1
        if not (seen == 1).all():
            raise DataError(f"{entry}: distributed extraction filled {int((seen != 1).sum())} rows not exactly once")
        atomic_save_npz(entry / f"{split}.gathered.npz", features=all_feats, labels=all_labels)
    dd.barrier()
    with np.load(entry / f"{split}.gathered.npz") as z:
        out = z["features"], z["labels"]
    dd.barrier()
    (entry / f"{split}.shard{rank}of{world}.npz").unlink(missing_ok=True)
    if rank == 0:
        (entry / f"{split}.gathered.npz").unlink(missing_ok=True)
    return out


def extract_features(backbone: Backbone, dataset: Dataset, *, split: str, dataset_name: str, feature_mode: str,
                     transform: dict[str, Any], data_root: str, cache_dir: Path | None, batch_size: int = 64,
                     workers: int = 0, device: torch.device | str = "cpu", amp: Precision | bool | None = None,
                     mmap: bool = False) -> FeatureSet:
    """Features of every sample of `dataset` (already carrying its transform), from the cache when present
    (memory-mapped with `mmap`, see load_feature_split); `amp`: the autocast dtype of the forward (float32 when
    None)."""
    device = torch.device(device)
    if not isinstance(amp, Precision):   # a bool: bf16 autocast or none, the flag's meaning before it took a dtype
        amp = Precision(device.type, "bfloat16" if amp else None)
    key_fields = {"feature_mode": feature_mode, "transform": transform, "dataset": dataset_name,
                  "root": str(data_root), "split": split, "n": len(dataset), "amp": amp.cache_key}
    meta = {"weights_id": backbone.weights_id, "checkpoint": backbone.report.source,
            "checkpoint_sha256": backbone.report.sha256, "arch": backbone.report.arch, **key_fields}
    entry = None
    if cache_dir is not None:
        entry = Path(cache_dir) / "features" / _cache_key(backbone, key_fields)
        cached = _read_cache_entry(entry, split, len(dataset), meta, mmap=mmap)
        if cached is not None:
            _logger.info("features %s/%s from cache %s", dataset_name, split, entry)
            return FeatureSet(cached.features, cached.labels, {**meta, "cache": str(entry), "cache_hit": True})
    from . import distributed as dd
    shard = (dd.rank(), dd.world_size())
    own, feats, labels = _run_extraction(backbone, dataset, feature_mode, batch_size=batch_size, workers=workers,
                                         device=device, desc=f"extract {dataset_name}/{split}", amp=amp, shard=shard)
    if shard[1] > 1:
        if entry is None:
            raise DataError("distributed extraction gathers through the feature cache; drop --no-cache")
        feats, labels = _gather_shards(entry, split, len(dataset), own, feats, labels)
    fs = FeatureSet(feats, labels, {**meta, "cache": str(entry) if entry else None, "cache_hit": False,
                                    "world_size": shard[1]})
    if entry is not None and dd.is_main():
        write_cache_entry(entry, split, fs, meta)
    dd.barrier()
    return fs


def write_cache_entry(entry: Path, split: str, fs: FeatureSet, meta: dict[str, Any], **extra: Any) -> None:
    """The .npz, then its meta: what it was computed from (`meta`, checked on every read) and its sha256."""
    npz = save_feature_split(entry, split, fs)
    atomic_write_json(entry / f"{split}.meta.json", {**meta, **extra, "count": len(fs),
                                                     "dim": int(fs.features.shape[1]), "v": FEATURE_CACHE_VERSION,
                                                     "sha256": sha256_file(npz)})


def _entry_problem(entry: Path, split: str, expected: dict[str, Any]) -> str | None:
    """Why a cache entry is not what this run would compute (another input, other bytes), or None. The name is a
    hash of the inputs, but a file with the right name can hold anything: a shared cache, a copy from another
    machine, a disk error."""
    try:
        stored = json.loads((entry / f"{split}.meta.json").read_text())
    except (OSError, ValueError) as e:
        return f"unreadable meta.json ({e})"
    if not isinstance(stored, dict) or stored.get("v") != FEATURE_CACHE_VERSION:
        return "written by another bench version"
    differs = sorted(k for k, v in json.loads(json.dumps(expected, default=str)).items() if stored.get(k) != v)
    if differs:
        return f"computed from other inputs ({', '.join(differs[:3])})"
    if sha256_file(entry / f"{split}.npz") != stored.get("sha256"):
        return "its contents do not match their recorded checksum"
    return None


def _set_aside(entry: Path, split: str, problem: str) -> None:
    for name in (f"{split}.npz", f"{split}.meta.json"):
        if (entry / name).exists():
            os.replace(entry / name, entry / f"{name}.set-aside")
    _logger.warning("feature cache %s/%s.npz: %s; set aside as %s.npz.set-aside, recomputing", entry, split,
                    problem, split)


def _read_cache_entry(entry: Path, split: str, n: int, expected: dict[str, Any], *,
                      mmap: bool = False) -> FeatureSet | None:
    if not (entry / f"{split}.npz").is_file():
        return None
    problem = _entry_problem(entry, split, expected)
    if problem is None:
        try:
            fs = load_feature_split(entry, split, mmap=mmap)
            problem = None if len(fs) == n else f"{len(fs)} rows, the dataset has {n}"
        except (DataError, NonFiniteError) as e:
            problem = f"unreadable ({str(e).split(': ', 1)[-1]})"
    if problem is not None:
        _set_aside(entry, split, problem)
        return None
    return fs
