"""COCO instances in the official layout: coco/annotations/instances_{train,val}2017.json, coco/{train,val}2017/.

Read with pycocotools' `COCO` (the API the evaluator uses). Targets follow torchvision's detection reference
(`references/detection/coco_utils.py`: ConvertCocoPolysToMask + FilterAndRemapCocoCategories) and detectron2's
loader: boxes become xyxy from COCO's xywh, crowd annotations and boxes without area are left out of training
targets (COCOeval reads crowd regions from the json itself), masks are decoded from polygons or RLE with
`annToMask`, and the category ids (1…90, with gaps) become contiguous labels 1…K in sorted id order (0 is the
background, as torchvision's detectors expect); `category_ids[label - 1]` maps a label back for the evaluator.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, register_dataset

__all__ = ["COCOInstances", "coco_targets"]

_SPLITS = ("train2017", "val2017")


def _read_annotations(path: Path):
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise DataError("the COCO reader needs pycocotools: pip install 'bench[detection]' (or pycocotools)") from None
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found; extract annotations_trainval2017.zip under the "
                        f"coco folder (or run `bench data mini` for the miniature)")
    try:
        data = json.loads(path.read_bytes())
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints progress
            coco.createIndex()
        # COCOeval's loadRes copies these; a file without them is not an instances file
        _ = data["images"], data["annotations"], data["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a COCO instances json ({type(e).__name__}: {e}); re-extract "
                        f"annotations_trainval2017.zip") from None
    return coco


def coco_targets(anns: list[dict], h: int, w: int, label_of: dict[int, int], *, masks: bool,
                 where: str) -> dict[str, np.ndarray]:
    """Training target of one image: xyxy boxes (clipped, positive area), labels 1…K, uint8 masks (N, H, W)."""
    from pycocotools import mask as mask_utils
    keep = [a for a in anns if not a.get("iscrowd", 0)]
    try:
        boxes = np.array([a["bbox"] for a in keep], dtype=np.float32).reshape(-1, 4)
        labels = np.array([label_of[a["category_id"]] for a in keep], dtype=np.int64)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{where}: annotation without a valid bbox/category_id ({type(e).__name__}: {e}); "
                        f"re-extract the annotations") from None
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    valid = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
    out = {"boxes": boxes[valid], "labels": labels[valid]}
    if masks:
        segs = [a["segmentation"] for a, v in zip(keep, valid) if v]
        decoded = []
        for s in segs:
            rle = mask_utils.frPyObjects(s, h, w) if isinstance(s, list) or isinstance(s.get("counts"), list) else s
            decoded.append(mask_utils.decode(mask_utils.merge(rle) if isinstance(rle, list) else rle))
        out["masks"] = np.stack(decoded).astype(np.uint8) if decoded else np.zeros((0, h, w), np.uint8)
    return out


class COCOInstances(Dataset):
    """(PIL image, {"boxes", "labels", "masks", "image_id"}) for one split of a COCO folder."""

    def __init__(self, root: Path, split: str, transform: Any = None, masks: bool = True):
        self.root, self.split, self.transform, self.masks = Path(root), split, transform, masks
        self.ann_file = self.root / "annotations" / f"instances_{split}.json"
        self.coco = _read_annotations(self.ann_file)
        self.ids = sorted(self.coco.imgs)
        self.category_ids = sorted(self.coco.cats)
        self.label_of = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self.class_names = tuple(self.coco.cats[c]["name"] for c in self.category_ids)
        if not (self.root / split).is_dir():
            raise DataError(f"{self.root / split}: COCO image folder not found; extract {split}.zip under "
                            f"{self.root}")

    def __len__(self) -> int:
        return len(self.ids)

    def with_objects(self) -> list[int]:
        """Indices of the images with at least one non-crowd box of positive size: torchvision's reference
        (`_coco_remove_images_without_annotations`), detectron2 (FILTER_EMPTY_ANNOTATIONS) and mmdet
        (filter_empty_gt) train on these only."""
        def ok(a):
            return not a.get("iscrowd", 0) and len(a.get("bbox", ())) == 4 and min(a["bbox"][2:]) > 1
        return [i for i, img_id in enumerate(self.ids) if any(ok(a) for a in self.coco.imgToAnns.get(img_id, []))]

    def target(self, i: int) -> dict[str, Any]:
        img_id = self.ids[i]
        info = self.coco.imgs[img_id]
        anns = self.coco.imgToAnns.get(img_id, [])
        t = coco_targets(anns, int(info["height"]), int(info["width"]), self.label_of, masks=self.masks,
                         where=f"{self.ann_file} image {img_id}")
        return {**t, "image_id": int(img_id)}

    def __getitem__(self, i: int):
        from .datasets import load_rgb
        info = self.coco.imgs[self.ids[i]]
        img = load_rgb(self.root / self.split / info["file_name"])
        if img.size != (int(info["width"]), int(info["height"])):
            raise DataError(f"{self.root / self.split / info['file_name']}: image is {img.size[0]}×{img.size[1]}, "
                            f"the annotations say {info['width']}×{info['height']}; re-extract {self.split}.zip")
        target = self.target(i)
        return (self.transform(img) if self.transform else img), target

    def __repr__(self) -> str:
        return f"COCO {self.split} ({len(self)} images)"


register_dataset(DatasetSpec(
    name="coco", folder="coco", splits=_SPLITS, open=lambda root, split, tf: COCOInstances(root, split, tf),
    num_classes=80, manifest={"train2017": 118287, "val2017": 5000}))
