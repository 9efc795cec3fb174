"""ADE20K (ADEChallengeData2016, SceneParsing 150 classes): images/<split>/*.jpg + annotations/<split>/*.png.

Labels follow mmseg's `LoadAnnotations(reduce_zero_label=True)`: raw 0 ("other") becomes 255 (ignored), k becomes
k−1, so classes are 0..149. The reader yields (PIL RGB image, int64 H×W label array) through a joint transform
`transform(image, label)`; the image count is checked against the manifest (20,210 train / 2,000 val).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, check_folder, register_dataset

__all__ = ["ADE20K", "reduce_zero_label", "ADE_SPLIT_FOLDERS"]

ADE_SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg reduce_zero_label: 0 → 255 (ignore), k → k−1, and a raw 255 stays 255 (mmseg's 254 → 255 step)."""
    out = label.astype(np.int64) - 1
    out[label == 0] = 255
    out[out == 254] = 255
    return out


class ADE20K(Dataset):
    def __init__(self, root: Path, split: str, transform: Callable[[Any, np.ndarray], Any] | None = None):
        folder = ADE_SPLIT_FOLDERS[split]
        img_dir = check_folder(root / "images" / folder, f"ADEChallengeData2016/images/{folder}")
        ann_dir = check_folder(root / "annotations" / folder, f"ADEChallengeData2016/annotations/{folder}")
        self.images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        self.labels = [ann_dir / f"{p.stem}.png" for p in self.images]
        missing = [p for p in self.labels if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]}: annotation missing for {len(missing)} image(s) of {img_dir}; "
                            f"re-extract ADEChallengeData2016")
        self.transform = transform
        self.split = split

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[Any, np.ndarray]:
        from PIL import Image
        with Image.open(self.images[i]) as im:
            img = im.convert("RGB")
        with Image.open(self.labels[i]) as lab:
            label = reduce_zero_label(np.asarray(lab))
        if label.shape != (img.height, img.width):
            raise DataError(f"{self.labels[i]}: label map {label.shape} does not match image "
                            f"{(img.height, img.width)}")
        return img, label

    def __getitem__(self, i: int):
        img, label = self.load(i)
        return self.transform(img, label) if self.transform else (img, label)

    def __repr__(self) -> str:
        return f"ADE20K({self.split}, {len(self)} images)"


register_dataset(DatasetSpec(
    name="ade20k", folder="ADEChallengeData2016", splits=("train", "val"), open=ADE20K, num_classes=150,
    manifest={"train": 20_210, "val": 2_000}))
