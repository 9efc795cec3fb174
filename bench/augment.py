"""Training augmentations of the linear-probe and fine-tuning recipes, as data (recorded in every record).

A train transform is a dict: {crop, size, scale, ratio, interpolation, flip, mean, std}, where `crop` names whose
random-resized crop is meant, because they differ in small ways that the papers' code fixes:
  torchvision: torchvision RandomResizedCrop (10 tries, then a centre crop clamped to the ratio range) — MoCo,
               MoCo v3, DINO.
  tf:          MAE `util/crop.py` RandomResizedCrop and BYOL `dataset.py` `_decode_and_random_crop` (the same
               draw): one draw (area uniform in scale, log-uniform aspect), the sides clipped to the image, no
               retry loop.
  inception:   up to 100 tries (area uniform in scale, log-uniform aspect, box must fit), else the whole image.
               SimCLR's TF `sample_distorted_bounding_box` also makes up to 100 tries but draws the aspect ratio
               uniformly and the height uniformly between the smallest and largest allowed, and needs 10% of the
               image covered (min_object_covered=0.1): the same support, not the same distribution.
mean/std of None leave pixels in [0, 1] (SimCLR).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .errors import BenchError

__all__ = ["build_train_transform", "TRAIN_CROPS"]

TRAIN_CROPS = ("torchvision", "tf", "inception")


def _tf_params(width: int, height: int, scale, ratio) -> tuple[int, int, int, int]:
    """MAE util/crop.py RandomResizedCrop.get_params (no retry loop)."""
    area = height * width
    target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
    log_ratio = torch.log(torch.tensor(ratio))
    aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
    w = min(int(round(math.sqrt(target_area * aspect))), width)
    h = min(int(round(math.sqrt(target_area / aspect))), height)
    i = torch.randint(0, height - h + 1, size=(1,)).item()
    j = torch.randint(0, width - w + 1, size=(1,)).item()
    return i, j, h, w


def _inception_params(width: int, height: int, scale, ratio, attempts: int = 100) -> tuple[int, int, int, int]:
    """TF sample_distorted_bounding_box(area_range=scale, aspect_ratio_range=ratio, max_attempts=100)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(attempts):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    return 0, 0, height, width


def _crop_class(kind: str):
    from torchvision import transforms as T
    from torchvision.transforms import functional as TF
    if kind == "torchvision":
        return T.RandomResizedCrop
    params = {"tf": _tf_params, "inception": _inception_params}[kind]

    class _Crop(T.RandomResizedCrop):
        @staticmethod
        def get_params(img, scale, ratio):
            width, height = TF.get_image_size(img)
            return params(width, height, scale, ratio)
    _Crop.__name__ = f"RandomResizedCrop_{kind}"
    return _Crop


def build_train_transform(spec: dict[str, Any]):
    """torchvision Compose from a train-transform dict (see module docstring)."""
    from torchvision import transforms as T
    unknown = set(spec) - {"crop", "size", "scale", "ratio", "interpolation", "flip", "mean", "std"}
    if unknown or spec.get("crop", "torchvision") not in TRAIN_CROPS:
        raise BenchError(f"train transform: unknown key(s) {sorted(unknown)} or crop {spec.get('crop')!r} "
                         f"(crop is one of {TRAIN_CROPS})")
    crop = _crop_class(spec.get("crop", "torchvision"))
    steps = [crop(spec.get("size", 224), scale=tuple(spec.get("scale", (0.08, 1.0))),
                  ratio=tuple(spec.get("ratio", (3 / 4, 4 / 3))),
                  interpolation=T.InterpolationMode(spec.get("interpolation", "bilinear")))]
    if spec.get("flip", True):
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if spec.get("mean") is not None:
        steps.append(T.Normalize(spec["mean"], spec["std"]))
    return T.Compose(steps)
