"""Transfer datasets whose benchmark split torchvision does not provide: SUN397, Caltech-101, Birdsnap, VOC2007.

- **sun397** (`SUN397/`): torchvision's `SUN397` has no partition argument, so partition 1 is applied here from
  `SUN397/Partitions/Training_01.txt` / `Testing_01.txt` (also accepted directly under `SUN397/`), 50 + 50
  images per class (19,850 / 19,850), as `linusericsson/ssl-transfer:datasets/sun397.py` does.
- **caltech101** (`caltech101/101_ObjectCategories/`): Kornblith et al. use 102 classes *including*
  `BACKGROUND_Google`, which torchvision's `Caltech101` drops; so the folder is read with torchvision's
  `ImageFolder` (102 sorted class folders, images converted to RGB by its loader). 30 training images per class
  are drawn with a fixed seed (`CALTECH_SPLIT_SEED`), the rest is the test set: 3,060 / 6,084.
- **birdsnap** (`birdsnap/`): no torchvision class. The official `images.txt` lists 49,829 images and
  `test_images.txt` the 2,443 test ones; the images are what `get_birdsnap.py` managed to download into
  `birdsnap/download/images/<species>/<file>` (the layout ssl-transfer reads). Many URLs are dead, so the
  counts cannot be fixed: the number of listed-but-missing images per split is kept on the dataset
  (`.missing`) and goes into the record.
- **voc2007** (`VOCdevkit/VOC2007`): multi-label, 20 classes, splits train/val/test (2,501 / 2,510 / 4,952).
  Labels use the devkit convention (1 positive, -1 negative, 0 difficult) from
  `ImageSets/Main/<class>_<split>.txt`; where those files are absent (e.g. a detection-only copy) they are
  derived from the XML annotations exactly as the devkit makes them: 1 if the image has a non-difficult object
  of the class, 0 if it has only difficult ones, -1 otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from .datasets import DatasetSpec, check_folder, register_dataset

__all__ = ["CALTECH_SPLIT_SEED", "CALTECH_TRAIN_PER_CLASS", "VOC_CLASSES", "voc_labels"]

CALTECH_SPLIT_SEED = 0
CALTECH_TRAIN_PER_CLASS = 30
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; the dataset is incomplete")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


class _Relabelled(Dataset):
    """Files + integer labels read with torchvision's default loader (RGB)."""

    def __init__(self, files: list[Path], labels: list[int], transform: Any):
        from torchvision.datasets.folder import default_loader
        self.files, self.labels, self.transform, self.loader = files, labels, transform, default_loader
        self.missing = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = self.loader(self.files[i])
        return (self.transform(img) if self.transform else img), self.labels[i]


def _open_sun397(folder: Path, split: str, transform: Any) -> Dataset:
    classes = [ln[3:] for ln in _read_lines(folder / "ClassName.txt", "SUN397/ClassName.txt")]  # "/a/abbey"
    index = {c: i for i, c in enumerate(sorted(classes))}
    name = f"{'Training' if split == 'trainval' else 'Testing'}_01.txt"
    part = folder / "Partitions" / name
    part = part if part.is_file() else folder / name
    files, labels = [], []
    for line in _read_lines(part, f"SUN397 partition file Partitions/{name} (from Partitions.zip)"):
        rel = line.lstrip("/")                                  # a/abbey/sun_xxx.jpg
        files.append(folder / rel)
        labels.append(index["/".join(rel.split("/")[1:-1])])
    return _Relabelled(files, labels, transform)


def _open_caltech101(folder: Path, split: str, transform: Any) -> Dataset:
    from torchvision.datasets import ImageFolder
    images = check_folder(folder / "101_ObjectCategories", "caltech101/101_ObjectCategories")
    ds = ImageFolder(str(images), transform=transform)
    targets = np.asarray(ds.targets)
    rng = np.random.RandomState(CALTECH_SPLIT_SEED)
    train, test = [], []
    for c in range(len(ds.classes)):
        idx = np.flatnonzero(targets == c)
        perm = idx[rng.permutation(len(idx))]
        train += perm[:CALTECH_TRAIN_PER_CLASS].tolist()
        test += perm[CALTECH_TRAIN_PER_CLASS:].tolist()
    return Subset(ds, sorted(train if split == "trainval" else test))


def _open_birdsnap(folder: Path, split: str, transform: Any) -> Dataset:
    rows = [ln.split("\t") if "\t" in ln else ln.split()
            for ln in _read_lines(folder / "images.txt", "birdsnap/images.txt")]
    header, rows = rows[0], rows[1:]
    if "path" not in header:
        raise DataError(f"{folder / 'images.txt'}: expected a tab-separated header with a 'path' column")
    paths = [r[header.index("path")] for r in rows]
    test = set(_read_lines(folder / "test_images.txt", "birdsnap/test_images.txt")[1:])
    species = sorted({p.split("/")[0] for p in paths})
    index = {s: i for i, s in enumerate(species)}
    chosen = [p for p in paths if (p in test) == (split == "test")]
    images = folder / "download" / "images"
    present = [p for p in chosen if (images / p).is_file()]
    ds = _Relabelled([images / p for p in present], [index[p.split("/")[0]] for p in present], transform)
    ds.missing = len(chosen) - len(present)
    return ds


def voc_labels(voc_root: Path, split: str, ids: list[str]) -> np.ndarray:
    """(N, 20) int8 devkit labels (1 pos, -1 neg, 0 difficult) from the class files or else the XML."""
    main = voc_root / "ImageSets" / "Main"
    files = [main / f"{c}_{split}.txt" for c in VOC_CLASSES]
    if all(f.is_file() for f in files):
        labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.int8)
        row = {i: n for n, i in enumerate(ids)}
        for c, f in enumerate(files):
            for line in _read_lines(f, str(f)):
                image_id, value = line.split()
                if image_id in row:
                    labels[row[image_id], c] = int(value)
        return labels
    return np.stack([_labels_from_xml(voc_root / "Annotations" / f"{i}.xml") for i in ids])


def _labels_from_xml(path: Path) -> np.ndarray:
    from .voc import parse_voc_xml
    out = np.full(len(VOC_CLASSES), -1, dtype=np.int8)
    for obj in parse_voc_xml(path).findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(f"{path}: object with unknown VOC class {name!r}; re-extract the devkit")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        c = VOC_CLASSES.index(name)
        out[c] = max(out[c], 0 if difficult else 1)
    return out


class _VOCClassification(Dataset):
    def __init__(self, voc_root: Path, split: str, transform: Any):
        from torchvision.datasets.folder import default_loader
        self.ids = _read_lines(voc_root / "ImageSets" / "Main" / f"{split}.txt", f"VOC2007 {split} list")
        self.labels = voc_labels(voc_root, split, self.ids)
        self.root, self.transform, self.loader = voc_root, transform, default_loader

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img = self.loader(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")
        return (self.transform(img) if self.transform else img), self.labels[i]


def _open_voc2007(folder: Path, split: str, transform: Any) -> Dataset:
    return _VOCClassification(check_folder(folder / "VOC2007", "VOCdevkit/VOC2007"), split, transform)


register_dataset(DatasetSpec(name="sun397", folder="SUN397", splits=("trainval", "test"), open=_open_sun397,
                             num_classes=397, manifest={"trainval": 19_850, "test": 19_850}))
register_dataset(DatasetSpec(name="caltech101", folder="caltech101", splits=("trainval", "test"),
                             open=_open_caltech101, num_classes=102, manifest={"trainval": 3_060, "test": 6_084}))
register_dataset(DatasetSpec(name="birdsnap", folder="birdsnap", splits=("trainval", "test"), open=_open_birdsnap,
                             num_classes=500))   # no manifest: the downloadable subset varies; .missing is recorded
register_dataset(DatasetSpec(name="voc2007", folder="VOCdevkit", splits=("train", "val", "test"),
                             open=_open_voc2007, num_classes=20, multilabel=True,
                             manifest={"train": 2_501, "val": 2_510, "test": 4_952}))
