"""Depth heads on frozen dense features, as dinov2/eval/depth builds them, and their loss.

- `LinearBinsHead` = DINOv2's linear depth head (dinov2/hub/depthers.py:36-67 `_make_dinov2_linear_depth_head`,
  dinov2/eval/depth/models/decode_heads/linear_head.py:14-89 `BNHead`): each layer's patch map concatenated with
  its CLS token broadcast over the grid (linear_head.py:67-79), every map bilinearly resized (align_corners False)
  to `upsample` × the grid and concatenated (`resize_concat`, :37-49), a 1×1 conv to 256 bins; the bins are
  linspace(min_depth, max_depth, 256) ('UD'), the scores are ReLU + 0.1 then normalised to sum 1 ('linear',
  decode_head.py:155-177) and the depth is their expectation. The `bn` of BNHead is commented out there, so
  there is none here. For CNN stages of different strides the target grid is `upsample` × the grid of the *last*
  listed layer (for a ViT every layer has the same grid, so this is DINOv2's `inputs[0]`).
- `DPTHead` = DINOv2's DPT preset (dinov2/hub/depth/decode_heads.py:690 `DPTHead`, after Ranftl et al. 2021):
  per layer a 1×1 projection to `post_process_channels` then ×4 (transposed conv), ×2, ×1 and ×½ (stride-2 conv)
  resampling (`ReassembleBlocks`), 3×3 convs to `channels`, top-down fusion blocks of two pre-activation residual
  units with ×2 bilinear upsampling, then conv 3×3 → ×2 → conv 3×3 → ReLU → conv 1×1 → ReLU + min_depth.
  Compact: the CLS readout ('project' in DINOv2) is added to every token instead of projected with it.
- `sigloss` = SigLoss (dinov2/eval/depth/models/losses/sigloss.py:33-50): g = ln(pred + ε) − ln(gt + ε) over
  gt > 0, sqrt(var(g) + 0.15 · mean(g)²), ε = 0.001, × loss_weight 10 (decode_head.py:58).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LinearBinsHead", "DPTHead", "sigloss", "head_input"]


def head_input(layers: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[torch.Tensor]:
    """Each layer's map, with its CLS token (if any) broadcast and concatenated on channels."""
    out = []
    for m, c in layers:
        out.append(m if c is None else torch.cat([m, c[:, :, None, None].expand_as(m)], 1))
    return out


class LinearBinsHead(nn.Module):
    def __init__(self, in_channels: int, n_bins: int = 256, min_depth: float = 1e-3, max_depth: float = 10.0,
                 upsample: int = 4, bins: str = "UD", norm: str = "linear"):
        super().__init__()
        self.conv_depth = nn.Conv2d(in_channels, n_bins, kernel_size=1)
        self.n_bins, self.min_depth, self.max_depth, self.upsample = n_bins, min_depth, max_depth, upsample
        self.bins, self.norm = bins, norm

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = [s * self.upsample for s in maps[-1].shape[2:]]
        x = torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], 1)
        logit = self.conv_depth(x)
        bins = (torch.linspace(self.min_depth, self.max_depth, self.n_bins, device=x.device) if self.bins == "UD"
                else torch.logspace(self.min_depth, self.max_depth, self.n_bins, device=x.device))
        if self.norm == "linear":
            p = torch.relu(logit) + 0.1
            p = p / p.sum(1, keepdim=True)
        elif self.norm == "softmax":
            p = torch.softmax(logit, 1)
        else:
            p = torch.sigmoid(logit)
            p = p / p.sum(1, keepdim=True)
        return torch.einsum("ikmn,k->imn", p, bins).unsqueeze(1)


class _ResidualUnit(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class _Fusion(nn.Module):
    def __init__(self, c: int, first: bool):
        super().__init__()
        self.res1 = None if first else _ResidualUnit(c)
        self.res2, self.project = _ResidualUnit(c), nn.Conv2d(c, c, 1)

    def forward(self, x, layer=None):
        """x: the deeper path's output (or the deepest layer); layer: this level's reassembled map."""
        if layer is not None:
            if layer.shape[2:] != x.shape[2:]:
                layer = F.interpolate(layer, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res1(layer)
        x = self.res2(x)
        return self.project(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    def __init__(self, in_channels: list[int], channels: int = 256,
                 post_process_channels: tuple[int, ...] = (96, 192, 384, 768), min_depth: float = 1e-3,
                 max_depth: float = 10.0, resample: bool = True):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"the DPT head takes 4 layers, got {len(in_channels)}")
        pc = post_process_channels
        self.projects = nn.ModuleList(nn.Conv2d(c, o, 1) for c, o in zip(in_channels, pc))
        # a ViT's four maps share one grid and are resampled into a pyramid; a CNN's stages already are one
        self.resize = nn.ModuleList([nn.ConvTranspose2d(pc[0], pc[0], 4, 4), nn.ConvTranspose2d(pc[1], pc[1], 2, 2),
                                     nn.Identity(), nn.Conv2d(pc[3], pc[3], 3, 2, 1)] if resample
                                    else [nn.Identity() for _ in range(4)])
        self.convs = nn.ModuleList(nn.Conv2d(o, channels, 3, padding=1, bias=False) for o in pc)
        self.fusion = nn.ModuleList(_Fusion(channels, i == 0) for i in range(4))
        self.project = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1),
                                  nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                  nn.Conv2d(channels // 2, 32, 3, padding=1), nn.ReLU(True), nn.Conv2d(32, 1, 1))
        self.min_depth = min_depth

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        # maps come with their CLS concatenated (head_input): fold it in by addition, 'add' readout
        xs = []
        for i, m in enumerate(maps):
            c = self.projects[i].in_channels
            if m.shape[1] == 2 * c:
                m = m[:, :c] + m[:, c:]
            xs.append(self.convs[i](self.resize[i](self.projects[i](m))))
        out = self.fusion[0](xs[-1])
        for i in range(1, 4):
            out = self.fusion[i](out, xs[-i - 1])
        return torch.relu(self.head(self.project(out))) + self.min_depth


def sigloss(pred: torch.Tensor, target: torch.Tensor, weight: float = 10.0, eps: float = 1e-3) -> torch.Tensor:
    valid = target > 0
    g = torch.log(pred[valid] + eps) - torch.log(target[valid] + eps)
    return weight * torch.sqrt(torch.var(g) + 0.15 * g.mean() ** 2)
