"""Evaluation transforms as data: a TransformSpec is recorded, hashed into cache keys and built into torchvision."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["TransformSpec", "build_eval_transform", "centre_box", "CentreFractionCrop"]


CENTRE_ROUNDING = ("floor", "rint")


@dataclass(frozen=True)
class TransformSpec:
    """Resize the short side to `resize`, centre-crop `crop`, to tensor in [0, 1], normalise with mean/std.

    `resize=None` skips resizing. mean/std of None leave inputs in [0, 1] (SimCLR's convention).
    `centre_fraction` (TF recipes, SimCLR/BYOL): instead, cut the central square of centre_fraction x the short
    side (its side rounded by `centre_rounding`: BYOL's int() floors, SimCLR's tf.rint rounds half to even; offset
    ((H - side) + 1) // 2 as both), then resize it to crop x crop.
    """
    resize: int | None = 256
    crop: int | None = 224
    interpolation: str = "bicubic"
    mean: tuple[float, ...] | None = (0.485, 0.456, 0.406)
    std: tuple[float, ...] | None = (0.229, 0.224, 0.225)
    centre_fraction: float | None = None
    centre_rounding: str = "floor"
    # Decode JPEGs at a reduced size (PIL `Image.draft`: a DCT-domain 1/2, 1/4 or 1/8 downscale, never below what
    # the resize/crop needs), then resize as usual. Faster to decode, but different pixels from the papers' full
    # decode, so off by default and part of the cache key when on (see docs/performance.md).
    draft: bool = False

    def __post_init__(self):
        if self.centre_fraction is not None:
            if not 0 < self.centre_fraction <= 1 or self.resize is not None or self.crop is None:
                raise ValueError(f"centre_fraction={self.centre_fraction!r} needs 0 < fraction <= 1, a crop size "
                                 f"and no resize (it replaces resize-then-crop)")
            if self.centre_rounding not in CENTRE_ROUNDING:
                raise ValueError(f"centre_rounding must be one of {CENTRE_ROUNDING}, not {self.centre_rounding!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.centre_fraction is None:   # absent, not null: resize-then-crop cache keys stay as they were
            del d["centre_fraction"], d["centre_rounding"]
        if not self.draft:                  # likewise: full decoding keeps the keys and fingerprints it always had
            del d["draft"]
        return d

    def draft_size(self) -> int | None:
        """The smallest square a draft decode may return: the short side must still reach the resize (or the
        crop, or crop / centre_fraction for the TF recipes' central square)."""
        if not self.draft:
            return None
        if self.centre_fraction is not None:
            return math.ceil(self.crop / self.centre_fraction)
        return self.resize if self.resize is not None else self.crop

    def at_resolution(self, crop: int) -> "TransformSpec":
        """Same crop ratio at another crop size: 256/224 stays 256/224 (used for CPU miniatures)."""
        if self.centre_fraction is not None:
            return replace(self, crop=crop)
        if self.crop is None or self.resize is None:
            return replace(self, crop=crop, resize=crop if self.resize is not None else None)
        return replace(self, crop=crop, resize=round(crop * self.resize / self.crop))


def centre_box(height: int, width: int, fraction: float, rounding: str = "floor") -> tuple[int, int, int]:
    """(top, left, side) of the TF recipes' central square: side = fraction x the short side, floored (BYOL
    `_decode_and_center_crop`: tf.cast to int32) or rounded half to even (SimCLR `_compute_crop_shape`: tf.rint)."""
    exact = fraction * min(height, width)
    side = int(exact) if rounding == "floor" else int(round(exact))   # Python's round() is half to even, as rint
    return (height - side + 1) // 2, (width - side + 1) // 2, side


class CentreFractionCrop:
    """PIL image → its central square of `fraction` x the short side (see centre_box)."""

    def __init__(self, fraction: float, rounding: str = "floor"):
        self.fraction, self.rounding = fraction, rounding

    def __call__(self, img):
        top, left, side = centre_box(img.height, img.width, self.fraction, self.rounding)
        return img.crop((left, top, left + side, top + side))

    def __repr__(self) -> str:
        return f"CentreFractionCrop({self.fraction}, {self.rounding})"


def build_eval_transform(spec: TransformSpec):
    from torchvision import transforms as T
    interp = T.InterpolationMode(spec.interpolation)
    steps = []
    if spec.centre_fraction is not None:
        steps += [CentreFractionCrop(spec.centre_fraction, spec.centre_rounding),
                  T.Resize((spec.crop, spec.crop), interpolation=interp)]
    elif spec.resize is not None:
        steps.append(T.Resize(spec.resize, interpolation=interp))
    if spec.crop is not None and spec.centre_fraction is None:
        steps.append(T.CenterCrop(spec.crop))
    steps.append(T.ToTensor())
    if spec.mean is not None:
        steps.append(T.Normalize(spec.mean, spec.std))
    compose = T.Compose(steps)
    # read by the datasets that decode with load_rgb(draft=...); open_dataset refuses it for the others
    compose.draft_size = spec.draft_size()
    return compose
