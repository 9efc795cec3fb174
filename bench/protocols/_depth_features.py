"""Dense feature maps from any backbone bench loads, cached per image and per layer on disk.

The three dense protocols (depth, video_segmentation, correspondence) read the same thing: for each image, the
maps of some layers — a ViT's patch tokens of blocks `layers` on their grid (optionally through the final norm,
with the CLS token beside them), or a CNN's / pyramid ViT's stages (timm `forward_intermediates`). ViTs take any
input size (position embeddings resampled per input as DINO's `interpolate_pos_encoding`), and an input whose
sides are not multiples of the patch is centre-padded with zeros first (DINOv2 hub `CenterPadding`) or, with
`pad="crop"`, cropped to the last full patch (DINO's patch conv drops those pixels; video segmentation).

Cache: `<cache>/dense/<key>/` holds one `.npy` per layer (N × C × h × w, float16, or N × C for the CLS token),
written through memory maps and renamed into place, and `meta.json` last, so a killed extraction is never
read back; the key hashes the weights, the architecture, the layer spec, the preprocessing and the image list.
The backbone never runs again for a cached split: the depth head trains on these arrays, label propagation and
keypoint matching read them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._io import atomic_write_json, sha256_json
from ..backbones.features import is_vit
from ..errors import BenchError, NonFiniteError

__all__ = ["DenseSpec", "DenseFeatures", "dense_maps", "extract_dense", "center_pad"]

_logger = logging.getLogger(__name__)
DENSE_CACHE_VERSION = 1


@dataclass(frozen=True)
class DenseSpec:
    layers: tuple[int, ...] = (-1,)     # ViT blocks / CNN stages; negative counts from the end
    norm: bool = True                   # ViT: block outputs through the final norm (DINO get_intermediate_layers)
    cls: bool = False                   # ViT: keep the CLS token of each layer (DINOv2 linear depth heads)
    pad: str = "center"                 # center (DINOv2 CenterPadding) | crop (drop pixels past the last patch)


def _patch(model: nn.Module) -> int:
    return int(model.patch_embed.patch_size[0]) if is_vit(model) else 1


def center_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad H and W to multiples of `multiple`, split evenly (the odd pixel after), as DINOv2's CenterPadding."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _vit_maps(model: nn.Module, x: torch.Tensor, spec: DenseSpec):
    from ._retrieval_extract import _dynamic_vit
    depth = len(model.blocks)
    idx = [i % depth for i in spec.layers]
    if any(not -depth <= i < depth for i in spec.layers):
        raise BenchError(f"layers {spec.layers} outside the {depth} blocks of {type(model).__name__}; "
                         f"--set layers=[...] for this depth")
    with _dynamic_vit(model):
        out = model.forward_intermediates(x, indices=idx, norm=spec.norm, output_fmt="NCHW",
                                          intermediates_only=True, return_prefix_tokens=True)
    return [(m, p[:, 0] if spec.cls else None) for m, p in out]


def _cnn_maps(model: nn.Module, x: torch.Tensor, spec: DenseSpec):
    if not hasattr(model, "forward_intermediates"):
        raise BenchError(f"{type(model).__name__} has no forward_intermediates(); dense protocols need a timm "
                         f"backbone (e.g. --model resnet50 rather than tv:resnet50)")
    maps = list(model.forward_intermediates(x, intermediates_only=True))
    n = len(maps)
    if any(not -n <= i < n for i in spec.layers):
        raise BenchError(f"layers {spec.layers} outside the {n} stages of {type(model).__name__}")
    return [(maps[i], None) for i in spec.layers]


@torch.inference_mode()
def dense_maps(model: nn.Module, x: torch.Tensor, spec: DenseSpec) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """[(map B×C×h×w, CLS B×C or None)] per layer of `spec`, in its order."""
    if is_vit(model):
        p = _patch(model)
        if spec.pad == "crop":
            x = x[..., :x.shape[-2] // p * p, :x.shape[-1] // p * p]
        else:
            x = center_pad(x, p)
        return _vit_maps(model, x, spec)
    return _cnn_maps(model, x, spec)


@dataclass
class DenseFeatures:
    """Cached maps of one image list: `maps[l]` (N, C, h, w) and `cls[l]` (N, C) or None, as float16 memmaps."""
    maps: list[np.ndarray]
    cls: list[np.ndarray | None]
    meta: dict[str, Any]

    def layer_tensors(self, rows, device="cpu") -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The chosen rows of every layer as float32 tensors (rows: an index array or slice)."""
        out = []
        for m, c in zip(self.maps, self.cls):
            mt = torch.from_numpy(np.ascontiguousarray(m[rows])).float().to(device)
            ct = None if c is None else torch.from_numpy(np.ascontiguousarray(c[rows])).float().to(device)
            out.append((mt, ct))
        return out


def _open(folder: Path, meta: dict[str, Any]) -> DenseFeatures:
    maps = [np.load(folder / f"layer{i}.npy", mmap_mode="r") for i in range(meta["n_layers"])]
    cls = [np.load(folder / f"cls{i}.npy", mmap_mode="r") if meta["cls"] else None for i in range(meta["n_layers"])]
    return DenseFeatures(maps, cls, meta)


def extract_dense(backbone, images, spec: DenseSpec, *, key: dict[str, Any], cache_dir: Path | None,
                  device: torch.device, batch_size: int = 8, desc: str = "dense features") -> DenseFeatures:
    """Maps of every image of `images` (a dataset of (C×H×W tensor, index); all images of one size), cached."""
    from tqdm.auto import tqdm
    full_key = {"v": DENSE_CACHE_VERSION, "weights": backbone.weights_id, "arch": backbone.report.arch,
                "spec": asdict(spec), "n": len(images), **key}
    digest = sha256_json(full_key)[:24]
    root = Path(cache_dir) / "dense" if cache_dir is not None else Path(tempfile.mkdtemp(prefix="bench-dense-"))
    final = root / digest
    if (final / "meta.json").is_file():
        meta = json.loads((final / "meta.json").read_text())
        _logger.info("dense features from cache %s", final)
        return _open(final, {**meta, "cache_hit": True})
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest}."))
    model = backbone.model.to(device).eval()
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False)
    maps: list[np.ndarray] = []
    cls: list[np.ndarray] = []
    try:
        for x, idx in tqdm(loader, desc=desc, unit="img", leave=False,
                           disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
            out = dense_maps(model, x.to(device), spec)
            if not maps:   # shapes known after the first batch: open one memmap per layer
                for i, (m, c) in enumerate(out):
                    maps.append(np.lib.format.open_memmap(tmp / f"layer{i}.npy", "w+", np.float16,
                                                          (len(images), *m.shape[1:])))
                    if c is not None:
                        cls.append(np.lib.format.open_memmap(tmp / f"cls{i}.npy", "w+", np.float16,
                                                             (len(images), c.shape[1])))
            rows = idx.numpy()
            for i, (m, c) in enumerate(out):
                if not torch.isfinite(m).all():
                    raise NonFiniteError(f"{desc}: non-finite features for images {rows.tolist()}; check the "
                                         f"checkpoint")
                maps[i][rows] = m.float().cpu().numpy()
                if c is not None:
                    cls[i][rows] = c.float().cpu().numpy()
        for a in maps + cls:
            a.flush()
        meta = {"n_layers": len(maps), "cls": bool(cls), "n": len(images), "key": full_key,
                "shapes": [list(m.shape[1:]) for m in maps]}
        del maps, cls
        atomic_write_json(tmp / "meta.json", meta)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(final, {**meta, "cache_hit": False})
