"""AdamW parameter groups with BEiT's layer-wise lr decay, and mmcv's poly schedule with linear warmup.

Layer ids as BEiT `mmcv_custom/layer_decay_optimizer_constructor.py` (`get_num_layer_for_vit`): cls_token,
mask_token, pos_embed and patch_embed 0, block i → i+1, everything else (final norm, shared rel-pos bias, decode
heads) L+1; the lr scale is decay^(L+1−id). No weight decay on 1-D parameters, biases, pos_embed and cls_token
(plus whatever the model's own no_weight_decay() names). timm's `param_groups_layer_decay` is not used for ViTs:
applied to the backbone alone it numbers the top layer from the backbone's last group, which is L (not L+1) when
the final norm is absent or unused, so every scale would be off by one decay step. CNN backbones take their ids
from timm's group_matcher (stem 0, then stages) with the heads one id above the last stage.
"""
from __future__ import annotations

import torch.nn as nn

__all__ = ["layer_decay_groups", "poly_warmup_factor", "layer_ids"]

_EMBED = ("cls_token", "mask_token", "pos_embed", "patch_embed", "reg_token")


def layer_ids(backbone: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: layer id}, id of the top layer that the heads share)."""
    names = [n for n, _ in backbone.named_parameters()]
    blocks = getattr(backbone, "blocks", None)
    if blocks is not None and hasattr(backbone, "patch_embed"):
        top = len(blocks) + 1
        return {n: 0 if n.startswith(_EMBED) else int(n.split(".")[1]) + 1 if n.startswith("blocks.") else top
                for n in names}, top
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters
        ids = group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)
        top = max(ids.values(), default=0) + 1
        return {n: ids.get(n, top) for n in names}, top
    return {n: 0 for n in names}, 1


def layer_decay_groups(backbone: nn.Module, head: nn.Module, weight_decay: float, layer_decay: float,
                       train_backbone: bool = True) -> list[dict]:
    """Param groups with `lr_scale` and `weight_decay`; the backbone is left out when it is frozen."""
    ids, top = layer_ids(backbone)
    skip = {"pos_embed", "cls_token"} | set(getattr(backbone, "no_weight_decay", lambda: ())())
    named = [(n, p, ids[n]) for n, p in backbone.named_parameters()] if train_backbone else []
    named += [(f"head.{n}", p, top) for n, p in head.named_parameters()]
    groups: dict[tuple[int, bool], dict] = {}
    for name, p, layer in named:
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or name in skip
        g = groups.setdefault((layer, no_wd), {"params": [], "weight_decay": 0.0 if no_wd else weight_decay,
                                               "lr_scale": layer_decay ** (top - layer), "layer_id": layer})
        g["params"].append(p)
    return list(groups.values())


def poly_warmup_factor(it: int, total: int, warmup: int, warmup_ratio: float = 1e-6, power: float = 1.0,
                       min_ratio: float = 0.0) -> float:
    """lr / base lr at iteration `it` (mmcv PolyLrUpdaterHook + linear warmup, by iteration)."""
    regular = (1 - min_ratio) * (1 - it / total) ** power + min_ratio
    if it < warmup:
        k = (1 - it / warmup) * (1 - warmup_ratio)
        return regular * (1 - k)
    return regular
