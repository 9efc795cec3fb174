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
from torch.utils.data import DataLoader, Dataset

from ._io import atomic_save_npz, atomic_write_json, sha256_json
from .backbones import Backbone
from .data import IndexedDataset
from .errors import DataError, NonFiniteError

__all__ = ["FeatureSet", "extract_features", "load_feature_split", "save_feature_split", "FEATURE_CACHE_VERSION"]

_logger = logging.getLogger(__name__)
FEATURE_CACHE_VERSION = 1


@dataclass
class FeatureSet:
    features: np.ndarray                  # (N, D) float32
    labels: np.ndarray                    # (N,) int64, or (N, C) for multi-label targets
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)


def save_feature_split(directory: Path, split: str, fs: FeatureSet) -> Path:
    return atomic_save_npz(Path(directory) / f"{split}.npz", features=fs.features.astype(np.float32),
                           labels=fs.labels)


def load_feature_split(directory: Path, split: str) -> FeatureSet:
    """Read `<directory>/<split>.npz`; a clear error names the file when it is missing or malformed."""
    path = Path(directory) / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"{path}: feature file not found; `bench extract --split {split} --out {directory}` "
                        f"writes it, or give {split}.npz with arrays 'features' (N×D) and 'labels' (N)")
    try:
        with np.load(path) as z:
            feats, labels = z["features"], z["labels"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a feature file with arrays 'features' and 'labels' ({e})") from e
    if feats.ndim != 2 or len(labels) != len(feats):
        raise DataError(f"{path}: 'features' must be N×D and 'labels' must have N rows "
                        f"(got {feats.shape} and {labels.shape})")
    meta_path = Path(directory) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return FeatureSet(feats.astype(np.float32, copy=False), labels, meta)


def _cache_key(backbone: Backbone, key_fields: dict[str, Any]) -> str:
    return sha256_json({"v": FEATURE_CACHE_VERSION, "weights": backbone.weights_id, "arch": backbone.report.arch,
                        **key_fields})[:24]


def _targets_array(targets: list) -> np.ndarray:
    arr = np.asarray(targets)
    return arr.astype(np.int64) if arr.ndim == 1 else arr


@torch.inference_mode()
def _run_extraction(backbone: Backbone, dataset: Dataset, feature_mode: str, *, batch_size: int, workers: int,
                    device: torch.device, desc: str, amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from tqdm.auto import tqdm
    model = backbone.model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(IndexedDataset(dataset), batch_size=batch_size, num_workers=workers, shuffle=False,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    n = len(dataset)
    feats: np.ndarray | None = None
    targets: list = [None] * n
    filled = np.zeros(n, dtype=bool)
    for images, target, index in tqdm(loader, desc=desc, unit="batch", leave=False,
                                      disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = backbone.features(images, feature_mode).float()
        if not torch.isfinite(out).all():
            raise NonFiniteError(f"{desc}: non-finite features in batch starting at sample {int(index[0])}; "
                                 f"check the checkpoint and the preprocessing")
        if feats is None:
            feats = np.empty((n, out.shape[1]), dtype=np.float32)
        idx = index.numpy()
        feats[idx] = out.cpu().numpy()
        filled[idx] = True
        for i, t in zip(idx, target.numpy()):
            targets[i] = t
    if feats is None or not filled.all():
        raise DataError(f"{desc}: {int((~filled).sum())} of {n} samples were never extracted")
    return feats, _targets_array(targets)


def extract_features(backbone: Backbone, dataset: Dataset, *, split: str, dataset_name: str, feature_mode: str,
                     transform: dict[str, Any], data_root: str, cache_dir: Path | None, batch_size: int = 64,
                     workers: int = 0, device: torch.device | str = "cpu", amp: bool = False) -> FeatureSet:
    """Features of every sample of `dataset` (already carrying its transform), from the cache when present."""
    device = torch.device(device)
    key_fields = {"feature_mode": feature_mode, "transform": transform, "dataset": dataset_name,
                  "root": str(data_root), "split": split, "n": len(dataset), "amp": amp}
    meta = {"weights_id": backbone.weights_id, "checkpoint": backbone.report.source,
            "checkpoint_sha256": backbone.report.sha256, "arch": backbone.report.arch, **key_fields}
    entry = None
    if cache_dir is not None:
        entry = Path(cache_dir) / "features" / _cache_key(backbone, key_fields)
        cached = _read_cache_entry(entry, split, len(dataset))
        if cached is not None:
            _logger.info("features %s/%s from cache %s", dataset_name, split, entry)
            return FeatureSet(cached.features, cached.labels, {**meta, "cache": str(entry), "cache_hit": True})
    feats, labels = _run_extraction(backbone, dataset, feature_mode, batch_size=batch_size, workers=workers,
                                    device=device, desc=f"extract {dataset_name}/{split}", amp=amp)
    fs = FeatureSet(feats, labels, {**meta, "cache": str(entry) if entry else None, "cache_hit": False})
    if entry is not None:
        save_feature_split(entry, split, fs)
        atomic_write_json(entry / f"{split}.meta.json", {**meta, "count": len(fs), "dim": int(feats.shape[1])})
    return fs


def _read_cache_entry(entry: Path, split: str, n: int) -> FeatureSet | None:
    if not (entry / f"{split}.npz").is_file() or not (entry / f"{split}.meta.json").is_file():
        return None
    try:
        fs = load_feature_split(entry, split)
    except DataError:
        _logger.warning("ignoring unreadable cache entry %s/%s.npz; re-extracting", entry, split)
        return None
    return fs if len(fs) == n else None
