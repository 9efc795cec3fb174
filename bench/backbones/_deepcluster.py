"""DeepCluster v1 networks (facebookresearch/deepcluster models/alexnet.py, vgg16.py) as bench backbones.

The released `checkpoint.pth.tar` holds `arch`, `epoch`, `optimizer` and a `state_dict` whose conv trunk was
wrapped in DataParallel (`features.module.N.*`), the fixed Sobel input layer (`sobel.0` grayscale 1×1 conv,
`sobel.1` two 3×3 gradient filters), the fc6/fc7 `classifier` and the cluster `top_layer`. The backbone here is
the Sobel layer plus the conv trunk (BatchNorm after every conv); its pooled feature is the global average of the
last conv block, the map that DeepCluster's retrieval and linear-probe code read.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["DEEPCLUSTER_ARCHS", "DeepClusterNet", "build_deepcluster"]

# models/alexnet.py CFG['2012']: (out, kernel, stride, padding) or 'M' (max-pool 3, stride 2)
_ALEXNET = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]
# models/vgg16.py: 3×3 convs, padding 1; 'M' is max-pool 2, stride 2
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
DEEPCLUSTER_ARCHS = {"deepcluster_alexnet": 5, "deepcluster_vgg16": 13}   # name → conv layers


def _trunk(cfg: list, in_ch: int, alexnet: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(3, 2) if alexnet else nn.MaxPool2d(2, 2))
            continue
        out, k, s, p = v if alexnet else (v, 3, 1, 1)
        layers += [nn.Conv2d(in_ch, out, k, s, p), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        in_ch = out
    return nn.Sequential(*layers)


class DeepClusterNet(nn.Module):
    """Sobel (optional) → conv trunk. `forward_features` is the last conv map; `forward_head` its global mean."""

    def __init__(self, arch: str, sobel: bool = True):
        super().__init__()
        if sobel:
            gray, grad = nn.Conv2d(3, 1, 1), nn.Conv2d(1, 2, 3, padding=1)
            self.sobel = nn.Sequential(gray, grad)
            self.sobel.requires_grad_(False)    # fixed in DeepCluster; the file's values are loaded into it
        else:
            self.sobel = None
        in_ch = 2 if sobel else 3
        self.features = _trunk(_ALEXNET, in_ch, True) if arch == "deepcluster_alexnet" else _trunk(_VGG16, in_ch,
                                                                                                     False)
        self.num_features = 256 if arch == "deepcluster_alexnet" else 512
        self.pretrained_cfg = {"interpolation": "bilinear"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.sobel(x) if self.sobel is not None else x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_deepcluster(arch: str, sobel: bool = True) -> DeepClusterNet:
    return DeepClusterNet(arch, sobel)
