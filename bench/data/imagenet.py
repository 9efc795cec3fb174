"""ImageNet-1k in torchvision ImageFolder layout: imagenet/{train,val}/<wnid>/*.JPEG."""
from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, check_folder, load_rgb, register_dataset


_logger = logging.getLogger(__name__)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _open_imagefolder(root: Path, split: str, transform: Any) -> Dataset:
    from torchvision.datasets import ImageFolder
    folder = check_folder(root / split, f"imagenet/{split}")
    classes = _class_dirs(folder)
    # ImageFolder numbers each split's own folders 0..C-1, so a val/ with fewer classes than train/ would be
    # scored against shifted labels. Every split takes train/'s numbering, matched by class name.
    train = root / "train"
    note = None
    if split != "train" and train.is_dir():
        reference = {c: i for i, c in enumerate(_class_dirs(train))}
        foreign = [c for c in classes if c not in reference]
        if foreign:
            raise DataError(f"{folder}: class folder(s) {foreign[:3]}{' ...' if len(foreign) > 3 else ''} are not "
                            f"in {train}; the splits must share class names (re-extract, or remove them)")
        if len(classes) < len(reference):
            note = f"{split}/ holds {len(classes)} of the {len(reference)} train/ classes, labelled by name"
            _logger.warning("%s: %s", folder, note)
        mapping = {c: reference[c] for c in classes}
    else:
        mapping = {c: i for i, c in enumerate(classes)}

    class _ByName(ImageFolder):
        def find_classes(self, directory):
            return list(mapping), mapping

    try:
        draft = getattr(transform, "draft_size", None)
        ds = _ByName(str(folder), transform=transform, loader=partial(load_rgb, draft=draft) if draft else load_rgb)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{folder}: not an ImageFolder layout (<class>/<image>): {e}") from e
    ds.class_note = note   # the runner copies it into the record's dataset block
    return ds


register_dataset(DatasetSpec(
    name="imagenet", folder="imagenet", splits=("train", "val"), open=_open_imagefolder, num_classes=1000,
    manifest={"train": 1_281_167, "val": 50_000}, draft=True))
