"""COCO box and mask AP with pycocotools' COCOeval, as detectron2's COCOEvaluator and mmdet's CocoDataset.evaluate.

Detections go to COCOeval in the results-file format (`loadRes`): image_id, category_id (the json's own ids),
bbox [x, y, w, h] in original-image pixels, score, and for masks a compressed RLE of the mask thresholded at 0.5.
The twelve `stats` are COCOeval's; bench keeps the first six (AP over IoU .50:.05:.95, AP50, AP75, AP small /
medium / large, all at 100 detections per image) in percent, box ones as `AP…` and mask ones as `mask_AP…`.
COCOeval reports -1 where no ground truth of that size exists (no large object in the miniature): such a
metric is left out of the metrics and named in `undefined`.
"""
from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

__all__ = ["COCO_STATS", "coco_results", "coco_ap"]

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_results(image_id: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                 category_ids: list[int], masks: np.ndarray | None = None,
                 mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """One image's detections (xyxy boxes, labels 1…K, optional (N, H, W) mask probabilities) as result dicts;
    a mask is its probabilities ≥ `mask_threshold` (torchvision's reference and mmdet's mask_thr_binary: 0.5)."""
    from pycocotools import mask as mask_utils
    out = []
    rles = None
    if masks is not None:
        rles = [mask_utils.encode(np.asfortranarray((m >= mask_threshold).astype(np.uint8))) for m in masks]
    for j, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        det = {"image_id": int(image_id), "category_id": int(category_ids[int(label) - 1]),
               "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)}
        if rles is not None:
            det["segmentation"] = {"size": [int(s) for s in rles[j]["size"]],
                                   "counts": rles[j]["counts"].decode("ascii")}
        out.append(det)
    return out


def coco_ap(gt, results: list[dict[str, Any]], iou_type: str = "bbox",
            img_ids: list[int] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """({AP, AP50, AP75, APs, APm, APl} in percent, details) of `results` against the pycocotools COCO `gt`.

    No detections at all scores 0 for every defined metric (COCOeval cannot load an empty result list).
    """
    from pycocotools.cocoeval import COCOeval
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm, not {iou_type!r}")
    ids = sorted(gt.getImgIds()) if img_ids is None else list(img_ids)
    quiet = io.StringIO()
    if results:
        if iou_type == "segm":   # detectron2 drops the box: with one, loadRes takes the box area as the
            # instance area, which moves detections between the small/medium/large ranges
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        with contextlib.redirect_stdout(quiet):
            dt = gt.loadRes(copy.deepcopy(results))
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(s) for s in ev.stats[:6]]
    else:
        # which sizes have ground truth decides which metrics are defined, as COCOeval would
        areas = [a["area"] for a in gt.loadAnns(gt.getAnnIds(imgIds=ids, iscrowd=False))]
        ranges = (None, None, None, (0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e10))
        stats = [0.0 if r is None or any(r[0] <= a < r[1] for a in areas) else -1.0 for r in ranges]
    metrics, undefined = {}, []
    for name, value in zip(COCO_STATS, stats):
        if value < 0:
            undefined.append(name)
        else:
            metrics[name] = 100.0 * value
    return metrics, {"undefined": undefined, "n_detections": len(results), "n_images": len(ids),
                     "summary": quiet.getvalue().strip().splitlines()[-12:]}
