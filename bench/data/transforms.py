"""Evaluation transforms as data: a TransformSpec is recorded, hashed into cache keys and built into torchvision."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["TransformSpec", "build_eval_transform"]


@dataclass(frozen=True)
class TransformSpec:
    """Resize the short side to `resize`, centre-crop `crop`, to tensor in [0, 1], normalise with mean/std.

    `resize=None` skips resizing. mean/std of None leave inputs in [0, 1] (SimCLR's convention).
    """
    resize: int | None = 256
    crop: int | None = 224
    interpolation: str = "bicubic"
    mean: tuple[float, ...] | None = (0.485, 0.456, 0.406)
    std: tuple[float, ...] | None = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at_resolution(self, crop: int) -> "TransformSpec":
        """Same crop ratio at another crop size: 256/224 stays 256/224 (used for CPU miniatures)."""
        if self.crop is None or self.resize is None:
            return replace(self, crop=crop, resize=crop if self.resize is not None else None)
        return replace(self, crop=crop, resize=round(crop * self.resize / self.crop))


def build_eval_transform(spec: TransformSpec):
    from torchvision import transforms as T
    interp = T.InterpolationMode(spec.interpolation)
    steps = []
    if spec.resize is not None:
        steps.append(T.Resize(spec.resize, interpolation=interp))
    if spec.crop is not None:
        steps.append(T.CenterCrop(spec.crop))
    steps.append(T.ToTensor())
    if spec.mean is not None:
        steps.append(T.Normalize(spec.mean, spec.std))
    return T.Compose(steps)
