"""TF/Haiku 'SAME' padding on a torch ResNet, for weights trained with it (BYOL's Haiku ResNet).

'SAME' pads ``max((ceil(n / s) - 1) * s + k - n, 0)`` in total, the smaller half first; torch's symmetric
``padding=k // 2`` agrees only for stride 1. The module names and the state dict stay the ones timm/torchvision use:
each conv and max-pool gets padding 0 and a pre-hook that pads its input.
"""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

__all__ = ["same_pad_amounts", "use_tf_same_padding"]


def same_pad_amounts(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one axis under 'SAME'."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad_hook(module: nn.Module, args: tuple) -> tuple:
    x = args[0]
    k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(getattr(module, "dilation", 1))
    top, bottom = same_pad_amounts(x.shape[-2], k[0], s[0], d[0])
    left, right = same_pad_amounts(x.shape[-1], k[1], s[1], d[1])
    # max-pool padding never wins (Haiku's reduce_window starts from -inf)
    value = -math.inf if isinstance(module, nn.MaxPool2d) else 0.0
    return (F.pad(x, (left, right, top, bottom), value=value),) + tuple(args[1:])


def use_tf_same_padding(model: nn.Module) -> int:
    """Switch every Conv2d and MaxPool2d of `model` to 'SAME' padding in place; returns how many changed."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            m.padding = (0, 0) if isinstance(m, nn.Conv2d) else 0
            m.register_forward_pre_hook(_pad_hook)
            n += 1
    return n
