"""PASCAL VOC detection AP, as detectron2's `PascalVOCDetectionEvaluator` computes it (pure numpy).

Reference code: facebookresearch/detectron2:detectron2/evaluation/pascal_voc_evaluation.py (`voc_ap`, `voc_eval`),
itself py-faster-rcnn's `voc_eval.py`, itself the devkit's `VOCevaldet.m`. Per class:

- detections of every image are sorted once by descending score (`np.argsort(-confidence)`, as the reference);
- each detection is matched, in that order, to the ground-truth box of its image with the largest IoU (over *all*
  boxes of that class, difficult ones included); if that IoU is > t: a difficult box makes the detection neither
  TP nor FP, an unmatched box makes it a TP (and the box is taken), an already-taken box makes it a duplicate FP;
  an IoU ≤ t is an FP. Recall divides by the number of non-difficult boxes;
- `use_07_metric=True` (the VOC2007 11-point rule, what detectron2 uses for voc_2007_test at every threshold):
  AP = (1/11) Σ_{r ∈ {0, .1, …, 1}} max_{r' ≥ r} p(r'), 0 where no recall reaches r;
- `use_07_metric=False` (VOC2010+ area): precision made monotone from the right, summed over recall steps.

Differences from the reference, none of which changes a number: the ten IoU thresholds are matched in one pass
(the greedy order does not depend on t, only the outcome does), IoUs are computed per image as vectors, and the
11-point maximum is read from a suffix maximum instead of ten masked scans. IoU uses the legacy "+1" pixel
convention of voc_eval (`pixel_inclusive=True`) on the devkit's 1-based XML coordinates; `pixel_inclusive=False`
gives the continuous IoU (used to compare with pycocotools). A class with no non-difficult ground truth has no
defined AP (the reference divides by zero); it is left out of the mean and reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClassDetections", "ClassGroundTruth", "voc_ap", "voc_class_ap", "voc_detection_metrics",
           "VOC_IOU_THRESHOLDS"]

VOC_IOU_THRESHOLDS = tuple(t / 100.0 for t in range(50, 100, 5))   # detectron2's exact floats


@dataclass
class ClassGroundTruth:
    """Ground truth of one class: per image id, boxes (M, 4) xyxy and difficult flags (M,)."""
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    difficult: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def npos(self) -> int:
        return int(sum((~d.astype(bool)).sum() for d in self.difficult.values()))


@dataclass
class ClassDetections:
    """Detections of one class over the whole test set: image ids (N,), scores (N,), boxes (N, 4) xyxy."""
    image_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True) -> float:
    """AP from a recall/precision curve (detection order). 11-point rule or VOC2010+ area under the curve."""
    rec, prec = np.asarray(rec, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        if rec.size == 0:
            return 0.0
        best_from = np.maximum.accumulate(prec[::-1])[::-1]          # max precision at recall ≥ rec[i]
        # The reference's own grid, np.arange(0, 1.1, 0.1): its 0.30000000000000004, 0.6000000000000001 and
        # 0.7000000000000001 make a recall of exactly 0.3, 0.6 or 0.7 miss that point; linspace would not.
        first = np.searchsorted(rec, np.arange(0.0, 1.1, 0.1), side="left")   # rec is non-decreasing
        points = np.where(first < rec.size, best_from[np.minimum(first, rec.size - 1)], 0.0)
        return float(sum(p / 11.0 for p in points))   # the reference's summation order, to the last bit
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _ious(box: np.ndarray, gts: np.ndarray, pixel_inclusive: bool) -> np.ndarray:
    one = 1.0 if pixel_inclusive else 0.0
    iw = np.maximum(np.minimum(gts[:, 2], box[2]) - np.maximum(gts[:, 0], box[0]) + one, 0.0)
    ih = np.maximum(np.minimum(gts[:, 3], box[3]) - np.maximum(gts[:, 1], box[1]) + one, 0.0)
    inter = iw * ih
    union = ((box[2] - box[0] + one) * (box[3] - box[1] + one)
             + (gts[:, 2] - gts[:, 0] + one) * (gts[:, 3] - gts[:, 1] + one) - inter)
    return inter / union


def _match(dets: ClassDetections, gt: ClassGroundTruth, thresholds: np.ndarray,
           pixel_inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
    """(tp, fp), each (N, T) in descending-score order: voc_eval's greedy matching at every threshold at once."""
    order = np.argsort(-np.asarray(dets.scores, dtype=np.float64))
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)[order]
    ids = np.asarray(dets.image_ids)[order]
    n, t = len(order), len(thresholds)
    tp, fp = np.zeros((n, t)), np.zeros((n, t))
    taken = {img: np.zeros((t, len(b)), dtype=bool) for img, b in gt.boxes.items()}
    for d in range(n):
        gts = gt.boxes.get(ids[d])
        if gts is None or len(gts) == 0:
            fp[d] = 1
            continue
        ov = _ious(boxes[d], np.asarray(gts, dtype=np.float64), pixel_inclusive)
        j = int(ov.argmax())
        above = ov[j] > thresholds
        if gt.difficult[ids[d]][j]:
            fp[d] = ~above                      # over a difficult box: ignored; below: still a miss
            continue
        hit = above & ~taken[ids[d]][:, j]
        taken[ids[d]][:, j] |= hit
        tp[d], fp[d] = hit, ~hit
    return tp, fp


def voc_class_ap(dets: ClassDetections, gt: ClassGroundTruth, thresholds=VOC_IOU_THRESHOLDS, *,
                 use_07_metric: bool = True, pixel_inclusive: bool = True) -> np.ndarray:
    """AP of one class at each IoU threshold, as fractions (T,). NaN when the class has no non-difficult box."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    npos = gt.npos
    if npos == 0:
        return np.full(len(thresholds), np.nan)
    tp, fp = _match(dets, gt, thresholds, pixel_inclusive)
    tp, fp = np.cumsum(tp, axis=0), np.cumsum(fp, axis=0)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return np.array([voc_ap(rec[:, k], prec[:, k], use_07_metric) for k in range(len(thresholds))])


def voc_detection_metrics(dets: dict[str, ClassDetections], gts: dict[str, ClassGroundTruth], *,
                          thresholds=VOC_IOU_THRESHOLDS, pixel_inclusive: bool = True) -> tuple[dict, dict]:
    """(metrics in percent, details) for every class in `gts`: AP/AP50/AP75 by the 11-point rule, and the
    same by area (`AP_area`, `AP50_area`, `AP75_area`). Classes are averaged with equal weight, as detectron2."""
    thresholds = tuple(float(t) for t in thresholds)
    empty = ClassDetections(np.array([], dtype=object), np.zeros(0), np.zeros((0, 4)))
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for name, gt in gts.items():
        d = dets.get(name, empty)
        per_class[name] = {"11pt": voc_class_ap(d, gt, thresholds, pixel_inclusive=pixel_inclusive),
                           "area": voc_class_ap(d, gt, thresholds, use_07_metric=False,
                                                pixel_inclusive=pixel_inclusive)}
    scored = [c for c, v in per_class.items() if not np.isnan(v["11pt"]).any()]
    metrics: dict[str, float] = {}
    for rule, suffix in (("11pt", ""), ("area", "_area")):
        mean = np.mean([per_class[c][rule] for c in scored], axis=0) * 100 if scored else np.full(len(thresholds),
                                                                                                     np.nan)
        metrics[f"AP{suffix}"] = float(mean.mean())
        for t, v in zip(thresholds, mean):
            if round(t * 100) in (50, 75):
                metrics[f"AP{round(t * 100)}{suffix}"] = float(v)
    details = {"iou_thresholds": list(thresholds), "classes_evaluated": scored,
               "classes_without_ground_truth": sorted(set(per_class) - set(scored)),
               "per_class_AP": {c: dict(zip((f"AP{round(t * 100)}" for t in thresholds),
                                            (float(v) for v in per_class[c]["11pt"] * 100))) for c in scored}}
    return metrics, details
