"""ImageNet-1k in torchvision ImageFolder layout: imagenet/{train,val}/<wnid>/*.JPEG."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, check_folder, register_dataset


def _open_imagefolder(root: Path, split: str, transform: Any) -> Dataset:
    from torchvision.datasets import ImageFolder
    folder = check_folder(root / split, f"imagenet/{split}")
    try:
        return ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{folder}: not an ImageFolder layout (<class>/<image>): {e}") from e


register_dataset(DatasetSpec(
    name="imagenet", folder="imagenet", splits=("train", "val"), open=_open_imagefolder, num_classes=1000,
    manifest={"train": 1_281_167, "val": 50_000}))
