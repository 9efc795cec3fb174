"""Feature modes: which tensor of a backbone's forward pass is "the feature".

Every mode takes (model, images) and returns an (N, D) tensor. ViT modes read timm's normed token sequence;
CNN modes read the pooled output. The mode is part of every cache key and record.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .._registry import Registry
from ..errors import BenchError

__all__ = ["FEATURE_MODES", "register_feature_mode", "compute_features", "is_vit", "default_feature_mode",
           "probe_feature_mode", "describe_probe_feature"]

FeatureFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
FEATURE_MODES: Registry[FeatureFn] = Registry("feature mode")
register_feature_mode = FEATURE_MODES.register


def is_vit(model: nn.Module) -> bool:
    return getattr(model, "num_prefix_tokens", 0) > 0 and hasattr(model, "forward_intermediates")


def default_feature_mode(model: nn.Module) -> str:
    return "cls" if is_vit(model) else "pool"


def probe_feature_mode(model: nn.Module) -> str:
    """The feature the architecture's own classifier reads, which its paper's linear probe reads too: CLS after the
    final norm for a token-pooled ViT ("cls"), else the pre-logits output ("pool": fc_norm(mean of patch tokens)
    where the classifier uses it, the pooled final stage of a CNN / Swin / ConvNeXt / PVT / EfficientNet / RegNet)."""
    from timm.models.vision_transformer import VisionTransformer
    head = getattr(type(model), "forward_head", None)
    if is_vit(model) and getattr(model, "global_pool", None) == "token" and head is VisionTransformer.forward_head:
        return "cls"   # not DeiT-distilled, whose classifier reads the mean of CLS and the distillation token
    return "pool"


def describe_probe_feature(model: nn.Module, mode: str) -> str:
    """What `probe_feature_mode` chose, in words, for the record's notes."""
    if mode == "cls":
        return "CLS token after the final norm (the token-pooled classifier's input)"
    pool = getattr(model, "global_pool", None) or getattr(getattr(model, "head", None), "global_pool", None)
    pool = getattr(pool, "pool_type", pool)   # timm CNNs (ConvNeXt: in its head) keep a SelectAdaptivePool2d
    fc_norm = getattr(model, "fc_norm", None)
    normed = " through fc_norm" if fc_norm is not None and not isinstance(fc_norm, nn.Identity) else ""
    return (f"{type(model).__name__}'s pre-logits output (global pool {pool!r}{normed}), what its classifier reads"
            if pool else f"{type(model).__name__}'s output with the classifier removed")


def _require_vit(model: nn.Module, mode: str) -> None:
    if not is_vit(model):
        raise BenchError(f"feature mode {mode!r} needs a timm ViT with a CLS token; "
                         f"use --feature-mode pool for {type(model).__name__}")


def _tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_features(x)  # (N, prefix + patches, D), after the final norm


def _last_n_normed(model: nn.Module, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    return model.forward_intermediates(x, indices=n, norm=True, output_fmt="NLC", intermediates_only=True,
                                       return_prefix_tokens=True)


@register_feature_mode("pool")
def _pool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own pooled pre-logits feature (CNN global average pool, e.g. RN50's 2048-d)."""
    if hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return model(x).flatten(1)  # torchvision models have had their classifier replaced by Identity


@register_feature_mode("cls")
def _cls(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLS token after the final norm (DINO k-NN, MoCo v3, MAE linear probe)."""
    _require_vit(model, "cls")
    return _tokens(model, x)[:, 0]


@register_feature_mode("output")
def _output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the backbone returns with its classifier removed: the CLS token after the final norm for a ViT, the
    global average pool for a CNN (DINO eval_knn.py `model(samples)`, DINOv2 log_regression.py's normed CLS)."""
    return _cls(model, x) if is_vit(model) else _pool(model, x)


@register_feature_mode("cls-prenorm")
def _cls_prenorm(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLS token of the last block before the final norm (what some probes read; `bench sensitivity` compares)."""
    _require_vit(model, "cls-prenorm")
    outs = model.forward_intermediates(x, indices=1, norm=False, output_fmt="NLC", intermediates_only=True,
                                       return_prefix_tokens=True)
    return outs[-1][1][:, 0]


@register_feature_mode("avgpool")
def _avgpool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of the normed patch tokens (prefix and register tokens excluded)."""
    _require_vit(model, "avgpool")
    return _tokens(model, x)[:, model.num_prefix_tokens:].mean(1)


@register_feature_mode("cls+avgpool")
def _cls_avgpool(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[CLS, mean(patches)] concatenated in order, as DINOv2 `linear.py`."""
    _require_vit(model, "cls+avgpool")
    t = _tokens(model, x)
    return torch.cat([t[:, 0], t[:, model.num_prefix_tokens:].mean(1)], dim=-1)


@register_feature_mode("cls+avgpool-interleaved")
def _cls_avgpool_interleaved(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """DINO `eval_linear.py --avgpool_patchtokens` (ViT-B): stacks on a new last axis, so [c0, a0, c1, a1, ...]."""
    _require_vit(model, "cls+avgpool-interleaved")
    t = _tokens(model, x)
    return torch.stack([t[:, 0], t[:, model.num_prefix_tokens:].mean(1)], dim=-1).flatten(1)


@register_feature_mode("last4-cls")
def _last4_cls(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLS of each of the last 4 blocks, each through the final norm, concatenated (DINO ViT-S linear probe)."""
    _require_vit(model, "last4-cls")
    outs = _last_n_normed(model, x, 4)
    return torch.cat([prefix[:, 0] for _, prefix in outs], dim=-1)


def compute_features(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    return FEATURE_MODES.get(mode)(model, x)
