"""Segmentation models: backbone feature maps → (ViT pyramid) → UPerHead (+ auxiliary FCNHead) or a linear BN head.

Heads follow mmseg 0.x `decode_heads/uper_head.py`, `fcn_head.py` and DINOv2's `BNHead`. A compact UPerHead is
written here rather than taken from segmentation-models-pytorch: smp's UPerNetDecoder puts a LayerNorm on every
input level, hard-codes its PSP bottleneck norm and has no dropout/classifier, so it is not the head BEiT, MAE and
iBOT trained (mmseg's ConvModule = conv without bias + BN + ReLU, dropout 0.1 before the 1×1 classifier).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones.features import is_vit
from ..errors import BenchError

__all__ = ["BackboneMaps", "ViTPyramid", "LevelProjection", "set_block_drop_path", "UPerHead", "FCNHead", "BNHead", "SegModel", "slide_inference",
           "set_drop_path", "add_layer_scale"]


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    """mmseg ConvModule(conv_cfg=None, norm_cfg=BN, act_cfg=ReLU): bias is off because BN follows."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)   # BEiT/DINOv2 configs: False


class BackboneMaps(nn.Module):
    """NCHW feature maps from a timm backbone: ViT blocks `out_indices` (patch tokens, optionally through the
    final norm — iBOT out_with_norm, DINOv2 get_intermediate_layers) or a CNN's last four stages (strides 4–32)."""

    def __init__(self, model: nn.Module, out_indices: tuple[int, ...], out_norm: bool, frozen: bool):
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            raise BenchError(f"{type(model).__name__} has no forward_intermediates(); segmentation needs a timm "
                             f"backbone (e.g. --model resnet50 rather than tv:resnet50)")
        self.model, self.vit, self.frozen, self.out_norm = model, is_vit(model), frozen, out_norm
        depth = len(getattr(model, "blocks", ()))
        self.out_indices = [i % depth for i in out_indices] if self.vit else None
        if self.vit and any(i >= depth for i in out_indices):
            raise BenchError(f"out_indices {out_indices} outside the {depth} blocks of the backbone; "
                             f"--set out_indices=[...] for this depth")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()     # frozen backbone: BN statistics and dropout stay in inference mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.vit:
                return list(self.model.forward_intermediates(x, indices=self.out_indices, norm=self.out_norm,
                                                             output_fmt="NCHW", intermediates_only=True))
            return list(self.model.forward_intermediates(x, intermediates_only=True))[-4:]


class ViTPyramid(nn.Module):
    """BEiT's fpn1..fpn4: 4× up (ConvT, BN, GELU, ConvT), 2× up (ConvT), identity, 2× down (max-pool)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), nn.BatchNorm2d(dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [op(m) for op, m in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), maps)]


class LevelProjection(nn.Module):
    """UM-MAE's fpn1..fpn4 on PVT/Swin (implus/UM-MAE:SEG/pvt.py, SEG/swin.py): a 1×1 conv with bias per stage
    to one width (fpn_out_dim), no norm or activation, before the UPerHead."""

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [proj(m) for proj, m in zip(self.proj, maps)]


class UPerHead(nn.Module):
    """mmseg UPerHead: PPM on the coarsest level, top-down FPN, fuse all levels at the finest, classify."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_channels[-1], channels, 1))
                                 for s in pool_scales)
        self.bottleneck = conv_bn_relu(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def _psp(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([x] + [_resize(p(x), x.shape[2:]) for p in self.ppm], 1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)] + [self._psp(inputs[-1])]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        outs = [outs[0]] + [_resize(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, 1))))


class FCNHead(nn.Module):
    """mmseg FCNHead(num_convs=1, concat_input=False): the auxiliary head on pyramid level `in_index`."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, in_index: int = 2, dropout: float = 0.1):
        super().__init__()
        self.in_index = in_index
        self.conv = conv_bn_relu(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.conv(inputs[self.in_index])))


class BNHead(nn.Module):
    """DINOv2 BNHead: selected maps resized to the first and concatenated → BN → 1×1. With bn=False it is mmseg's
    FCNHead(num_convs=0, concat_input=False, input_transform='resize_concat'), iBOT's linear head: the 1×1 alone."""

    def __init__(self, in_channels: list[int], in_index: tuple[int, ...], num_classes: int, bn: bool = True):
        super().__init__()
        self.in_index = tuple(in_index)
        width = sum(in_channels[i] for i in self.in_index)
        self.bn = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.conv_seg = nn.Conv2d(width, num_classes, 1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        maps = [inputs[i] for i in self.in_index]
        x = torch.cat([maps[0]] + [_resize(m, maps[0].shape[2:]) for m in maps[1:]], 1)
        return self.conv_seg(self.bn(x))


class SegModel(nn.Module):
    def __init__(self, features: BackboneMaps, decode: nn.Module, neck: nn.Module | None = None,
                 aux: nn.Module | None = None):
        super().__init__()
        self.features, self.neck, self.decode, self.aux = features, neck or nn.Identity(), decode, aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, aux logits or None) at feature resolution; callers resize to the label size (as mmseg)."""
        maps = self.neck(self.features(x))
        return self.decode(maps), (self.aux(maps) if self.aux is not None and self.training else None)


@torch.no_grad()
def slide_inference(model: nn.Module, img: torch.Tensor, crop: int, stride: int, num_classes: int) -> torch.Tensor:
    """mmseg `slide_inference`: crop×crop windows every `stride` px, logits averaged where windows overlap.

    Windows are padded to crop×crop (zeros, sliced back) when the image is smaller, so fixed-size ViTs work.
    """
    _, _, h, w = img.shape
    preds = img.new_zeros((1, num_classes, h, w))
    count = img.new_zeros((1, 1, h, w))
    for yi in range(max(h - crop + stride - 1, 0) // stride + 1):
        for xi in range(max(w - crop + stride - 1, 0) // stride + 1):
            y2, x2 = min(yi * stride + crop, h), min(xi * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            window = img[:, :, y1:y2, x1:x2]
            ph, pw = window.shape[2], window.shape[3]
            window = F.pad(window, (0, crop - pw, 0, crop - ph))
            logits = _resize(model(window)[0].float(), (crop, crop))[:, :, :ph, :pw]
            preds[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def add_layer_scale(model: nn.Module, init_values: float) -> None:
    """A trainable per-channel scale (timm LayerScale) on both residual branches of every timm ViT block that has
    none, starting at `init_values` (mmseg's MAE backbone: gamma_1/gamma_2 = init_values · 1). Blocks whose
    checkpoint brought a LayerScale keep it."""
    from timm.layers import LayerScale
    for blk in model.blocks:
        if not (hasattr(blk, "ls1") and hasattr(blk, "ls2")):
            raise BenchError(f"layer_scale_init needs timm ViT blocks with ls1/ls2, not {type(blk).__name__}")
        dim = blk.norm1.weight.shape[0]
        for name in ("ls1", "ls2"):
            if isinstance(getattr(blk, name), nn.Identity):
                setattr(blk, name, LayerScale(dim, init_values=init_values).to(blk.norm1.weight.device))


def set_block_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly from 0 to `rate` over every transformer block of a hierarchical model
    (timm Swin / PVT v2 blocks carry drop_path1 and drop_path2), in network order, as timm's and UM-MAE's dpr."""
    from timm.layers import DropPath
    blocks = [m for m in model.modules() if hasattr(m, "drop_path1") and hasattr(m, "drop_path2")]
    for i, block in enumerate(blocks):
        r = rate * i / max(len(blocks) - 1, 1)
        block.drop_path1 = DropPath(r) if r > 0 else nn.Identity()
        block.drop_path2 = DropPath(r) if r > 0 else nn.Identity()


def set_drop_path(model: nn.Module, rate: float) -> None:
    """Stochastic depth rising linearly to `rate` over the ViT's blocks (BEiT drop_path_rate 0.1)."""
    from timm.layers import DropPath
    blocks = list(getattr(model, "blocks", ()))
    for i, block in enumerate(blocks):
        r = rate * i / max(len(blocks) - 1, 1)
        for name in ("drop_path1", "drop_path2", "drop_path"):
            if hasattr(block, name):
                setattr(block, name, DropPath(r) if r > 0 else nn.Identity())
