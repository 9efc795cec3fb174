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
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints progress
            coco.createIndex()
        # COCOeval's loadRes copies these; a file without them is not an instances file
        _ = data["images"], data["annotations"], data["categories"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        reason = " ".join(str(e).split())[:160]
        raise DataError(f"{path}: not a COCO instances json ({type(e).__name__}: {reason}); re-extract "
                        f"annotations_trainval2017.zip") from None
    return coco


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _annotation_problem(a: Any, masks: bool) -> str | None:
    """What keeps one annotation from becoming a training target (so a bad file fails before training, in one
    line, not in a DataLoader worker), or None."""
    if not isinstance(a, dict):
        return "not an object"
    bbox = a.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return "bbox is not [x, y, w, h]"
    if not masks:
        return None
    if "segmentation" not in a:
        return "no segmentation (mask training needs one per annotation)"
    seg = a["segmentation"]
    if isinstance(seg, list):
        if not seg or not all(isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                              and all(_number(v) for v in poly) for poly in seg):
            return "segmentation polygons need 3 or more (x, y) points each"
        return None
    if not (isinstance(seg, dict) and isinstance(seg.get("size"), list) and len(seg["size"]) == 2
            and isinstance(seg.get("counts"), (str, list))):
        return "segmentation is neither polygons nor RLE {size, counts}"
    return None


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
        self.class_names = tuple(str(self.coco.cats[c].get("name", c)) for c in self.category_ids)
        if not self.ids:
            raise DataError(f"{self.ann_file}: no images in {split}; re-extract annotations_trainval2017.zip")
        for img_id in self.ids:
            info = self.coco.imgs[img_id]
            name = info.get("file_name") if isinstance(info, dict) else None
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise DataError(f"{self.ann_file}: image {img_id} has file_name {name!r}, not a file name in "
                                f"{split}/; re-extract the annotations")
        for ann in self.coco.dataset["annotations"]:
            if problem := _annotation_problem(ann, masks):
                ann_id = ann.get("id") if isinstance(ann, dict) else None
                raise DataError(f"{self.ann_file}: annotation {ann_id} {problem}; re-extract the annotations")
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
