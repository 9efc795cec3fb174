"""Backbone key names of the training frameworks, mapped onto timm/torchvision's (the `backbone.*` of a Lightning,
lightly or mmpretrain/mmselfsup checkpoint, after the prefix is stripped).

- mmpretrain / mmselfsup `VisionTransformer` (mmpretrain/models/backbones/vision_transformer.py): `layers.N.ln1`,
  `attn.qkv`, `attn.proj`, `attn.gamma1`, `ln2`, `ffn.layers.0.0` / `ffn.layers.1` (mmcv FFN), `ffn.gamma2`,
  `patch_embed.projection`, a final `ln1` (final_norm), `pre_norm` (CLIP), `ln2` (out_type='avg_featmap').
- lightly's `nn.Sequential(*list(resnet.children())[:-1])`: torchvision ResNet children by position
  (0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4, 8 avgpool).
- CIFAR ResNet stems (solo-learn base.py `cifar`: conv1 = 3×3 stride 1 padding 2, maxpool = Identity): the
  weights show the 3×3 kernel; the padding is the convention of every such code base that bench knows.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from ..errors import CheckpointError

__all__ = ["is_mm_vit", "mm_vit_to_timm", "is_sequential_resnet", "sequential_resnet_to_tv", "CIFAR_STEM_PADDING"]

_MM_BLOCK = [(r"ln1\.", "norm1."), (r"ln2\.", "norm2."), (r"ffn\.layers\.0\.0\.", "mlp.fc1."),
             (r"ffn\.layers\.1\.", "mlp.fc2."), (r"attn\.gamma1\.weight", "ls1.gamma"),
             (r"ffn\.gamma2\.weight", "ls2.gamma"), (r"attn\.qkv\.", "attn.qkv."), (r"attn\.proj\.", "attn.proj.")]
_MM_TOP = {"patch_embed.projection.": "patch_embed.proj.", "ln1.": "norm.", "pre_norm.": "norm_pre.",
           "cls_token": "cls_token", "pos_embed": "pos_embed"}
# solo-learn base.py (cifar): nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False); maxpool Identity
CIFAR_STEM_PADDING = 2


def is_mm_vit(sd: Mapping[str, torch.Tensor]) -> bool:
    return "layers.0.ln1.weight" in sd and "layers.0.attn.qkv.weight" in sd


def _mm_block_key(rest: str) -> str | None:
    for pat, rep in _MM_BLOCK:
        if re.match(pat, rest):
            return re.sub(pat, rep, rest, count=1)
    return None


def mm_vit_to_timm(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmpretrain ViT names → timm's; any key with no timm place is an error naming it (never dropped)."""
    if "ln2.weight" in sd and "ln1.weight" in sd:
        raise CheckpointError("an mmpretrain ViT with both a final norm (ln1) and an avg_featmap norm (ln2) has no "
                              "timm equivalent (timm replaces the final norm by fc_norm); save it with "
                              "final_norm=False or out_type='cls_token'")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"layers\.(\d+)\.(.*)", k)
        if m:
            new = _mm_block_key(m.group(2))
            new = new and f"blocks.{m.group(1)}.{new}"
        elif k.startswith("ln2."):
            new = "fc_norm." + k[4:]
        else:
            new = next((rep + k[len(top):] for top, rep in _MM_TOP.items() if k.startswith(top)), None)
        if new is None:
            raise CheckpointError(f"mmpretrain ViT key {k!r} has no timm equivalent (relative position / "
                                  f"layer-scale variants other than gamma1/gamma2 are not mapped)")
        out[new] = v
    return out


_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def is_sequential_resnet(sd: Mapping[str, torch.Tensor]) -> bool:
    w = sd.get("0.weight")
    return w is not None and w.ndim == 4 and "4.0.conv1.weight" in sd and "1.running_mean" in sd


def sequential_resnet_to_tv(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".")
        if head not in _RESNET_CHILDREN:
            raise CheckpointError(f"key {k!r} is not a torchvision ResNet child (0 conv1, 1 bn1, 4-7 layer1-4) of "
                                  f"nn.Sequential(*resnet.children()[:-1])")
        out[f"{_RESNET_CHILDREN[head]}.{rest}"] = v
    return out
