"""AdamW parameter groups with BEiT's layer-wise lr decay, and mmcv's poly schedule with linear warmup.

Layer ids as BEiT `mmcv_custom/layer_decay_optimizer_constructor.py` (`get_num_layer_for_vit`): cls_token,
pos_embed and patch_embed 0, block i → i+1, everything else (final norm, decode heads) L+1; the lr scale is
decay^(L+1−id). No weight decay on 1-D parameters (norms, biases), pos_embed and cls_token. The backbone's ids come
from timm's `param_groups_layer_decay` (the same BEiT rule driven by the model's group_matcher, so CNN stages get
stage-wise decay); the heads form the top layer (scale 1).
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["layer_decay_groups", "poly_warmup_factor"]


def layer_decay_groups(backbone: nn.Module, head: nn.Module, weight_decay: float, layer_decay: float,
                       train_backbone: bool = True) -> list[dict]:
    """Param groups with `lr_scale` and `weight_decay`; the backbone is left out when it is frozen."""
    from timm.optim import param_groups_layer_decay
    groups = []
    if train_backbone:
        nwd = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
        groups = param_groups_layer_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=nwd,
                                          layer_decay=layer_decay)
    head_params = [p for p in head.parameters() if p.requires_grad]
    decay = [p for p in head_params if p.ndim > 1]
    no_decay = [p for p in head_params if p.ndim <= 1]
    groups += [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
               {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


def poly_warmup_factor(it: int, total: int, warmup: int, warmup_ratio: float = 1e-6, power: float = 1.0,
                       min_ratio: float = 0.0) -> float:
    """lr / base lr at iteration `it` (mmcv PolyLrUpdaterHook + linear warmup, by iteration)."""
    regular = (1 - min_ratio) * (1 - it / total) ** power + min_ratio
    if it < warmup:
        k = (1 - it / warmup) * (1 - warmup_ratio)
        return regular * (1 - k)
    return regular
