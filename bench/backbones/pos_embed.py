"""Position embeddings at another resolution, resampled the way each family's own code does it.

A ViT evaluated off its training grid (retrieval's 512-px multi-scale, segmentation, detection, DINOv2 at 224)
adds an interpolated position grid; small differences in the rule (a +0.1 scale offset, antialiasing) change the
features by up to 1e-1. timm's default (bicubic, antialias, exact size) is none of the publishers' rules, so each
family names its own here, transcribed from its repository:

- ``dino``: facebookresearch/dino (and bytedance/ibot, same code) vision_transformer.interpolate_pos_encoding:
  bicubic with ``scale_factor = (grid + 0.1) / M``, no antialias, CLS position kept apart.
- ``dinov2``: facebookresearch/dinov2 models/vision_transformer.interpolate_pos_encoding as the hub builds it:
  ``interpolate_offset=0.1`` (scale factor, as DINO) and no antialias.
- ``dinov2-reg``: the hub's register models: ``interpolate_offset=0.0`` (exact ``size``) and ``antialias=True``.
- ``mae``: facebookresearch/mae util/pos_embed.interpolate_pos_embed (BEiT's fine-tuning code, which MAE copied):
  bicubic to the exact size, ``align_corners=False``, no antialias, extra tokens kept.
- ``moco-v3``: vits.VisionTransformerMoCo: the position embedding is a fixed 2-D sin-cos table, so the model
  built for the new grid recomputes it (``build_2d_sincos_position_embedding``) instead of interpolating.
- ``timm``: timm.layers.resample_abs_pos_embed (bicubic, antialias), for files whose method is not known.

The rule is installed on the model (its ``_pos_embed``) and named in the load report and the weights id.
"""
from __future__ import annotations

import math
import types
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._registry import Registry

__all__ = ["POS_EMBED_RULES", "pos_embed_rule_for", "resample_patch_grid", "install_pos_embed_rule",
           "mocov3_sincos", "is_mocov3_sincos", "set_vit_input_size"]

# (patch grid (1, M, M, D) float, new (h, w)) → (1, h*w, D)
GridRule = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]
POS_EMBED_RULES: Registry[GridRule] = Registry("position-embedding rule")


def _nchw(grid: torch.Tensor) -> torch.Tensor:
    return grid.permute(0, 3, 1, 2)


def _tokens(nchw: torch.Tensor) -> torch.Tensor:
    return nchw.permute(0, 2, 3, 1).reshape(1, -1, nchw.shape[1])


def _scale_offset(grid: torch.Tensor, new: tuple[int, int], antialias: bool) -> torch.Tensor:
    m = grid.shape[1]
    # The offset keeps floor(scale * M) at the intended size; the scale factor itself (not the size) is what
    # torch's bicubic kernel uses, so the offset moves every sample point slightly (dino issue #8).
    out = F.interpolate(_nchw(grid), scale_factor=((new[0] + 0.1) / m, (new[1] + 0.1) / m), mode="bicubic",
                        antialias=antialias)
    assert tuple(out.shape[-2:]) == tuple(new)
    return _tokens(out)


@POS_EMBED_RULES.register("dino")
def _dino(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    return _scale_offset(grid, new, antialias=False)


@POS_EMBED_RULES.register("dinov2")
def _dinov2(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    return _scale_offset(grid, new, antialias=False)


@POS_EMBED_RULES.register("dinov2-reg")
def _dinov2_reg(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    return _tokens(F.interpolate(_nchw(grid), size=new, mode="bicubic", antialias=True))


@POS_EMBED_RULES.register("mae")
def _mae(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    return _tokens(F.interpolate(_nchw(grid), size=new, mode="bicubic", align_corners=False))


@POS_EMBED_RULES.register("moco-v3")
def _mocov3(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    return mocov3_sincos(new, grid.shape[-1])[:, 1:]


@POS_EMBED_RULES.register("timm")
def _timm(grid: torch.Tensor, new: tuple[int, int]) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed
    return resample_abs_pos_embed(grid.reshape(1, -1, grid.shape[-1]), new_size=list(new),
                                  old_size=list(grid.shape[1:3]), num_prefix_tokens=0)


def mocov3_sincos(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MoCo v3's fixed table for an (h, w) patch grid, with its zero CLS position: (1, 1 + h*w, dim)."""
    h, w = grid
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                            indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    ow, oh = gw.flatten()[:, None] * omega, gh.flatten()[:, None] * omega
    table = torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), table], dim=1)


def is_mocov3_sincos(pos_embed: torch.Tensor | None) -> bool:
    """Whether a stored position embedding is MoCo v3's fixed sin-cos table (its provenance, in the weights)."""
    if pos_embed is None or pos_embed.ndim != 3 or pos_embed.shape[-1] % 4:
        return False
    side = math.isqrt(pos_embed.shape[1] - 1)
    if side * side != pos_embed.shape[1] - 1:
        return False
    return torch.allclose(pos_embed.float(), mocov3_sincos((side, side), pos_embed.shape[-1]), atol=1e-5)


def pos_embed_rule_for(family: str, kind: str | None, has_registers: bool) -> str | None:
    """The rule a family's own code uses; None for models without an interpolated absolute embedding."""
    if kind == "dinov2":
        return "dinov2-reg" if has_registers else "dinov2"
    if kind != "vit":
        return None   # ResNets; BEiT's relative tables are resized at load (timm's BEiT filter)
    return {"dino": "dino", "ibot": "dino", "dino-or-ibot": "dino", "mae": "mae", "mae-finetuned": "mae",
            "moco-v3": "moco-v3"}.get(family, "timm")


def resample_patch_grid(pos_embed: torch.Tensor, n_prefix: int, old: tuple[int, int], new: tuple[int, int],
                        rule: str) -> torch.Tensor:
    """(1, n_prefix + old grid, D) → (1, n_prefix + new grid, D); prefix positions are kept apart, unchanged."""
    if tuple(old) == tuple(new):
        return pos_embed
    dtype = pos_embed.dtype
    prefix, patches = pos_embed[:, :n_prefix], pos_embed[:, n_prefix:].float()   # DINOv2 interpolates in fp32
    grid = patches.reshape(1, old[0], old[1], -1)
    return torch.cat([prefix, POS_EMBED_RULES.get(rule)(grid, tuple(new)).to(dtype)], dim=1)


def _pos_embed_with_rule(self, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer._pos_embed with the family's resampling rule in place of timm's."""
    to_cat = []
    if self.cls_token is not None:
        to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
    if self.reg_token is not None:
        to_cat.append(self.reg_token.expand(x.shape[0], -1, -1))
    if x.ndim == 4:
        b, h, w, c = x.shape
        x = x.view(b, -1, c)
    else:
        h, w = self.patch_embed.grid_size
    n_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
    pos = resample_patch_grid(self.pos_embed, n_prefix, tuple(self.patch_embed.grid_size), (h, w),
                              self.pos_embed_rule)
    if self.no_embed_class:
        x = torch.cat(to_cat + [x + pos], dim=1) if to_cat else x + pos
    else:
        x = (torch.cat(to_cat + [x], dim=1) if to_cat else x) + pos
    return self.pos_drop(x)


def install_pos_embed_rule(model: nn.Module, rule: str) -> None:
    """Make a timm ViT resample its position grid with `rule` at every input size."""
    POS_EMBED_RULES.get(rule)   # unknown names fail here, not at the first forward
    model.pos_embed_rule = rule
    model._pos_embed = types.MethodType(_pos_embed_with_rule, model)


def set_vit_input_size(model: nn.Module, img_size: tuple[int, int]) -> None:
    """timm's `set_input_size`, with the stored grid resampled by the model's own rule (timm's own otherwise)."""
    rule = getattr(model, "pos_embed_rule", None)
    old = model.pos_embed.detach().clone() if isinstance(getattr(model, "pos_embed", None), torch.Tensor) else None
    old_grid = tuple(model.patch_embed.grid_size)
    model.set_input_size(img_size=img_size)
    if rule is None or old is None or tuple(model.patch_embed.grid_size) == old_grid:
        return
    n_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    with torch.no_grad():
        model.pos_embed.copy_(resample_patch_grid(old, n_prefix, old_grid, tuple(model.patch_embed.grid_size), rule))
