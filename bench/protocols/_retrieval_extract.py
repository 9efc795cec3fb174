"""Retrieval descriptors from a backbone: variable-size images, batch 1, CLS / GeM / R-MAC, one or more scales.

Images keep their aspect ratio, so the generic `bench.cache.extract_features` (fixed-size batches) does not fit;
this loop feeds one image at a time and caches the result under the run's cache directory.

- Preprocessing: `resize` (deepcluster eval_retrieval.py `ImageHelper`: PIL resize so the max side = imsize,
  bilinear, may upsample) or `thumbnail` (dino eval_image_retrieval.py: PIL thumbnail, antialiased, only shrinks).
  Queries are cropped to their bbox `before_resize` (revisitop: `.crop(bbx)` first), `after_resize` (deepcluster:
  bbox scaled by the resize ratio and rounded) or not at all (`none`, DINO).
- Multi-scale: the image tensor is resized by bilinear interpolation (align_corners=False) to each scale, the
  descriptors are averaged, then L2-normalised (dino `utils.multi_scale`, cirtorch `extract_ms` with msp = 1).
- CLS: the ViT's CLS token after the final norm. GeM (p = 3, cirtorch `gem`) and R-MAC (deepcluster `rmac`,
  Tolias et al. regions with 40% overlap) run over the spatial map: the CNN's last stage (VGG without its last
  max-pool, as deepcluster) or the ViT's patch tokens reshaped to their grid.
- R-MAC can also return its L2-normalised region vectors for regional PCA-whitening (deepcluster).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._io import atomic_save_npz, sha256_json
from ..backbones import Backbone
from ..backbones.features import is_vit
from ..errors import BenchError, DataError, NonFiniteError

__all__ = ["ImagePrep", "Descriptor", "describe", "rmac_regions", "extract_descriptors", "spatial_map"]

_logger = logging.getLogger(__name__)
_INTERP = {"bilinear": 2, "bicubic": 3, "lanczos": 1}   # PIL.Image.Resampling values


@dataclass(frozen=True)
class ImagePrep:
    imsize: int
    resize: str = "resize"            # resize | thumbnail
    interpolation: str = "bilinear"
    query_crop: str = "before_resize"  # before_resize | after_resize | none
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __call__(self, img, bbx: tuple[float, ...] | None) -> torch.Tensor:
        from torchvision.transforms.functional import normalize, to_tensor
        if bbx is not None and self.query_crop == "before_resize":
            img = img.crop(bbx)
        w0, h0 = img.size
        if self.resize == "thumbnail":
            img = img.copy()
            img.thumbnail((self.imsize, self.imsize), _INTERP[self.interpolation])
        else:
            ratio = self.imsize / max(w0, h0)
            img = img.resize((int(round(w0 * ratio)), int(round(h0 * ratio))), _INTERP[self.interpolation])
        x = normalize(to_tensor(img), self.mean, self.std)
        if bbx is not None and self.query_crop == "after_resize":
            ratio = img.size[0] / w0
            x1, y1, x2, y2 = np.round(np.asarray(bbx) * ratio).astype(int)
            x = x[:, y1:y2, x1:x2]
        if min(x.shape[1:]) < 1:
            raise DataError(f"query bbox {bbx} gives an empty crop")
        return x


@dataclass(frozen=True)
class Descriptor:
    pooling: str = "gem"              # cls | gem | rmac
    gem_p: float = 3.0
    rmac_levels: int = 3
    scales: tuple[float, ...] = (1.0,)
    regional: bool = False            # R-MAC: keep the region vectors (for regional whitening)


@contextmanager
def _dynamic_vit(model: nn.Module):
    """Let a timm ViT take any input size (position embeddings resampled per image, like DINO's interpolation)."""
    from timm.layers import Format
    pe = model.patch_embed
    saved = (model.dynamic_img_size, pe.strict_img_size, pe.flatten, pe.output_fmt)
    model.dynamic_img_size, pe.strict_img_size, pe.flatten, pe.output_fmt = True, False, False, Format.NHWC
    try:
        yield
    finally:
        model.dynamic_img_size, pe.strict_img_size, pe.flatten, pe.output_fmt = saved


def _vit_tokens(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    # DINO's patch conv drops the pixels beyond the last full patch; cropping them is the same computation.
    p = model.patch_embed.patch_size[0]
    h, w = x.shape[-2] // p, x.shape[-1] // p
    if h < 1 or w < 1:
        raise DataError(f"image of {tuple(x.shape[-2:])} px is smaller than one {p}-px patch")
    with _dynamic_vit(model):
        return model.forward_features(x[..., :h * p, :w * p]), h, w


def spatial_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) activations: ViT patch tokens on their grid, else the CNN's last stage."""
    if is_vit(model):
        tokens, h, w = _vit_tokens(model, x)
        return tokens[:, model.num_prefix_tokens:].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
    feats = getattr(model, "features", None)
    if isinstance(feats, nn.Sequential) and isinstance(feats[-1], nn.MaxPool2d):
        if getattr(model, "sobel", None) is not None:   # DeepCluster v1: eval_retrieval.py applies net.sobel first
            x = model.sobel(x)
        return feats[:-1](x)          # VGG conv5 without its last max-pool (deepcluster eval_retrieval.py)
    if hasattr(model, "forward_features"):
        return model.forward_features(x)
    raise BenchError(f"{type(model).__name__}: no spatial feature map for GeM/R-MAC; use a timm model "
                     f"(--model resnet50) or a torchvision VGG")


def rmac_regions(h: int, w: int, levels: int) -> np.ndarray:
    """R-MAC regions (x, y, width, height) on an h×w map: Tolias et al., as deepcluster `get_rmac_region_coordinates`.

    Square regions of side ⌊2·min(h, w)/(l+1)⌋ at level l, with the number of extra regions along the long side
    chosen so neighbours overlap by about 40%.
    """
    steps = np.arange(2, 8, dtype=np.float64)
    side = min(h, w)
    b = (max(h, w) - side) / (steps - 1)
    extra = int(np.argmin(np.abs((side ** 2 - side * b) / side ** 2 - 0.4))) + 1
    w_extra, h_extra = (extra, 0) if h < w else ((0, extra) if h > w else (0, 0))
    regions = []
    for level in range(1, levels + 1):
        wl = np.floor(2 * side / (level + 1))
        half = np.floor(wl / 2 - 1)
        bw = (w - wl) / (level + w_extra - 1) if level + w_extra - 1 > 0 else 0
        bh = (h - wl) / (level + h_extra - 1) if level + h_extra - 1 > 0 else 0
        cw = np.floor(half + bw * np.arange(level + w_extra)) - half
        ch = np.floor(half + bh * np.arange(level + h_extra)) - half
        regions += [[float(x), float(y), wl, wl] for y in ch for x in cw]
    out = np.round(np.array(regions)).astype(np.int64)
    out[:, 0] -= np.maximum(out[:, 0] + out[:, 2] - w, 0)   # shift regions that overrun the border back in
    out[:, 1] -= np.maximum(out[:, 1] + out[:, 3] - h, 0)
    return out


def _pool(model: nn.Module, x: torch.Tensor, d: Descriptor) -> torch.Tensor:
    """(R, D) descriptors of one image at one scale: R = 1 except for regional R-MAC."""
    if d.pooling == "cls":
        if not is_vit(model):
            raise BenchError(f"pooling 'cls' needs a ViT; {type(model).__name__} has no CLS token (use gem/rmac)")
        return _vit_tokens(model, x)[0][:, 0]
    fmap = spatial_map(model, x)
    if d.pooling == "gem":
        return fmap.clamp(min=1e-6).pow(d.gem_p).mean((-2, -1)).pow(1.0 / d.gem_p)
    regions = rmac_regions(fmap.shape[-2], fmap.shape[-1], d.rmac_levels)
    vecs = torch.stack([fmap[0, :, y:y + rh, x:x + rw].amax((-2, -1)) for x, y, rw, rh in regions])
    vecs = F.normalize(vecs, dim=1)
    return vecs if d.regional else F.normalize(vecs.sum(0, keepdim=True), dim=1)


@torch.inference_mode()
def describe(model: nn.Module, x: torch.Tensor, d: Descriptor) -> torch.Tensor:
    """Descriptor(s) of one image tensor (1, 3, H, W): multi-scale average, then L2 (regions: per region)."""
    if d.regional:
        return _pool(model, x, d)
    v = None
    for s in d.scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        out = _pool(model, xs, d).float()
        v = out if v is None else v + out
    return F.normalize(v / len(d.scales), dim=1)


def extract_descriptors(backbone: Backbone, dataset, prep: ImagePrep, desc: Descriptor, *, cache_dir: Path | None,
                        key: dict[str, Any], device: torch.device, workers: int = 0) -> dict[str, np.ndarray]:
    """{'features': N×D} (or, for regional R-MAC, {'regions': ΣR×D, 'offsets': N+1}) of every image of `dataset`."""
    from tqdm.auto import tqdm
    path = None
    if cache_dir is not None:
        full_key = {"v": 1, "weights": backbone.weights_id, "arch": backbone.report.arch, "prep": asdict(prep),
                    "descriptor": asdict(desc), "n": len(dataset), **key}
        path = Path(cache_dir) / "retrieval" / f"{sha256_json(full_key)[:24]}.npz"
        if path.is_file():
            with np.load(path) as z:
                _logger.info("retrieval descriptors from cache %s", path)
                return {k: z[k] for k in z.files}
    model = backbone.model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, shuffle=False)
    out: list[np.ndarray] = [None] * len(dataset)
    name = f"{key.get('dataset')}/{key.get('split')}"
    for img, i in tqdm(loader, desc=f"describe {name}", unit="img", leave=False,
                       disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
        v = describe(model, img.unsqueeze(0).to(device), desc)
        if not torch.isfinite(v).all():
            raise NonFiniteError(f"{name}: non-finite descriptor for image {i}; check the checkpoint")
        out[i] = v.cpu().numpy().astype(np.float32)
    if desc.regional:
        arrays = {"regions": np.concatenate(out), "offsets": np.cumsum([0] + [len(o) for o in out])}
    else:
        arrays = {"features": np.concatenate(out)}
    if path is not None:
        atomic_save_npz(path, **arrays)
    return arrays
