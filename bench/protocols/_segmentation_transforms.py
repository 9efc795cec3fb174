"""The mmseg ADE20K pipelines (BEiT/MAE/iBOT/DINOv2 configs) as joint (image, label) transforms.

Train: Resize img_scale (2048, 512) × ratio U(0.5, 2.0) keeping the aspect ratio → RandomCrop 512 with
cat_max_ratio 0.75 → flip p 0.5 → PhotoMetricDistortion → Normalize → pad to the crop (image 0, label 255).
Test: Resize to img_scale (2048, 512) keeping the ratio, Normalize; the label stays at its original size and the
logits are resized to it (mmseg evaluates at the original resolution).

PhotoMetricDistortion: brightness (+U(−32, 32)) and contrast (×U(0.5, 1.5)) are mmseg's arithmetic; saturation and
hue use torchvision's adjust_saturation/adjust_hue (a grayscale blend and an HSV hue shift) instead of mmcv's
cv2 HSV round trip — close, not bit-identical.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics.segmentation import IGNORE_INDEX

__all__ = ["rescale_size", "SegTrainTransform", "SegTestTransform"]


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv.imrescale: the largest size with long side ≤ scale[0] and short side ≤ scale[1]."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def _to_tensors(img, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return x, torch.from_numpy(np.asarray(label, dtype=np.int64))


def _resize_pair(x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    y = F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return x, y


class _Normalize:
    def __init__(self, mean, std):
        self.mean = torch.tensor(mean).view(3, 1, 1) * 255   # mmseg normalises 0–255 pixels with mean/std ×255
        self.std = torch.tensor(std).view(3, 1, 1) * 255

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SegTrainTransform:
    def __init__(self, crop: int, scale: tuple[int, int], ratio_range: tuple[float, float], cat_max_ratio: float,
                 mean, std, photometric: bool = True):
        self.crop, self.scale, self.ratio_range = crop, scale, ratio_range
        self.cat_max_ratio, self.photometric, self.norm = cat_max_ratio, photometric, _Normalize(mean, std)

    def _crop_box(self, y: torch.Tensor) -> tuple[int, int]:
        # mmseg RandomCrop: up to 10 tries for a crop whose most frequent class is < cat_max_ratio of the pixels.
        h, w = y.shape
        for _ in range(10):
            top, left = random.randint(0, max(h - self.crop, 0)), random.randint(0, max(w - self.crop, 0))
            labels, counts = y[top:top + self.crop, left:left + self.crop].unique(return_counts=True)
            counts = counts[labels != IGNORE_INDEX]
            if self.cat_max_ratio >= 1 or (len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio):
                break
        return top, left

    def _distort(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision.transforms.functional as TF
        if random.random() < 0.5:
            x = (x + random.uniform(-32, 32)).clamp(0, 255)
        contrast_first = random.random() < 0.5
        if contrast_first and random.random() < 0.5:
            x = (x * random.uniform(0.5, 1.5)).clamp(0, 255)
        if random.random() < 0.5:
            x = TF.adjust_saturation(x / 255, random.uniform(0.5, 1.5)) * 255
        if random.random() < 0.5:
            x = TF.adjust_hue(x / 255, random.uniform(-18, 18) / 180) * 255
        if not contrast_first and random.random() < 0.5:
            x = (x * random.uniform(0.5, 1.5)).clamp(0, 255)
        return x

    def __call__(self, img, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _to_tensors(img, label)
        ratio = random.uniform(*self.ratio_range)
        scale = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        x, y = _resize_pair(x, y, rescale_size(x.shape[1], x.shape[2], scale))
        top, left = self._crop_box(y)
        x, y = x[:, top:top + self.crop, left:left + self.crop], y[top:top + self.crop, left:left + self.crop]
        if random.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if self.photometric:
            x = self._distort(x)
        x = self.norm(x)
        ph, pw = self.crop - x.shape[1], self.crop - x.shape[2]
        return F.pad(x, (0, pw, 0, ph), value=0.0), F.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)


class SegTestTransform:
    def __init__(self, scale: tuple[int, int], mean, std):
        self.scale, self.norm = scale, _Normalize(mean, std)

    def __call__(self, img, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _to_tensors(img, label)
        size = rescale_size(x.shape[1], x.shape[2], self.scale)
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        return self.norm(x), y
