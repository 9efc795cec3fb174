"""PASCAL VOC detection in the devkit layout: VOCdevkit/VOC{2007,2012}/{Annotations,JPEGImages,ImageSets/Main}.

Splits are `<year>-<image set>` ("2007-trainval", "2012-trainval", "2007-test", ...), read with torchvision's
`VOCDetection` (the XML parser and the split files of the devkit). Targets follow detectron2's
`detectron2/data/datasets/pascal_voc.py:load_voc_instances`: the XML's 1-based inclusive pixel boxes become
(xmin - 1, ymin - 1, xmax, ymax) in continuous coordinates, difficult objects are kept (detectron2 trains on them;
the evaluator ignores them) and flagged. Labels are 1..20 in detectron2's class order (0 is background, as
torchvision's detection models expect).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, register_dataset

__all__ = ["parse_voc_xml", "VOC_CLASSES", "VOCDetectionBoxes", "voc_objects"]

# detectron2/data/datasets/pascal_voc.py:CLASS_NAMES
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_SPLITS = ("2007-train", "2007-val", "2007-trainval", "2007-test", "2012-train", "2012-val", "2012-trainval")


def parse_voc_xml(path: str | Path):
    """The root element of a VOC annotation. DTDs and entity declarations are refused before parsing (VOC files
    have none; they are how XXE and billion-laughs payloads work), and a malformed file is a one-line DataError."""
    import xml.etree.ElementTree as ET
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable VOC annotation ({e.strerror or e}); re-extract the devkit") from None
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise DataError(f"{path}: refused VOC annotation with a DTD/entity declaration (VOC XML has none); "
                        f"re-extract the devkit")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise DataError(f"{path}: malformed VOC annotation XML ({e}); re-extract the devkit") from None


def voc_objects(annotation: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """Boxes (N, 4) float32 in detectron2's coordinates, labels (N,) 1..20, difficult (N,) bool, from a parsed XML."""
    try:
        objs = annotation["annotation"].get("object", [])
        objs = objs if isinstance(objs, list) else [objs]
        boxes, labels, difficult = [], [], []
        for o in objs:
            if o["name"] not in VOC_CLASSES:
                raise DataError(f"{where}: unknown VOC class {o['name']!r}; the 20 classes are "
                                f"{', '.join(VOC_CLASSES)}")
            b = o["bndbox"]
            boxes.append([float(b["xmin"]) - 1.0, float(b["ymin"]) - 1.0, float(b["xmax"]), float(b["ymax"])])
            labels.append(VOC_CLASSES.index(o["name"]) + 1)
            difficult.append(int(o.get("difficult", 0)) == 1)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DataError(f"{where}: VOC annotation without a valid object name/bndbox ({type(e).__name__}: {e}); "
                        f"re-extract the devkit") from None
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "difficult": np.asarray(difficult, dtype=bool)}


class VOCDetectionBoxes(Dataset):
    """(PIL image, {"boxes", "labels", "difficult", "image_id"}) for one year and image set of a VOCdevkit."""

    def __init__(self, devkit: Path, year: str, image_set: str, transform: Any = None):
        from torchvision.datasets import VOCDetection
        self.year, self.image_set, self.transform = year, image_set, transform
        try:
            self.voc = VOCDetection(str(Path(devkit).parent), year=year, image_set=image_set)
        except (RuntimeError, FileNotFoundError, ValueError) as e:
            raise DataError(f"{devkit}/VOC{year}: not a VOC devkit layout with ImageSets/Main/{image_set}.txt ({e}); "
                            f"extract VOCtrainval/VOCtest tars under the data root") from e

    def __len__(self) -> int:
        return len(self.voc)

    def image_id(self, i: int) -> str:
        return f"{self.year}/{Path(self.voc.images[i]).stem}"

    def target(self, i: int) -> dict[str, Any]:
        """The annotation of image i without decoding the image (for building the evaluation ground truth)."""
        ann = self.voc.parse_voc_xml(parse_voc_xml(self.voc.targets[i]))
        return {**voc_objects(ann, self.voc.targets[i]), "image_id": self.image_id(i)}

    def __getitem__(self, i: int):
        from .datasets import load_rgb
        img = load_rgb(self.voc.images[i])
        ann = self.voc.parse_voc_xml(parse_voc_xml(self.voc.targets[i]))
        target = voc_objects(ann, self.voc.targets[i])
        target["image_id"] = self.image_id(i)
        return (self.transform(img) if self.transform else img), target

    def __repr__(self) -> str:
        return f"VOC{self.year} {self.image_set} ({len(self)} images)"


def _open_voc(devkit: Path, split: str, transform: Any) -> Dataset:
    year, _, image_set = split.partition("-")
    return VOCDetectionBoxes(devkit, year, image_set, transform)


register_dataset(DatasetSpec(
    name="voc", folder="VOCdevkit", splits=_SPLITS, open=_open_voc, num_classes=len(VOC_CLASSES),
    manifest={"2007-trainval": 5011, "2007-test": 4952, "2012-trainval": 11540}))
