"""PASCAL VOC detection AP, as detectron2's `PascalVOCDetectionEvaluator` computes it (pure numpy).

Reference code: facebookresearch/detectron2:detectron2/evaluation/pascal_voc_evaluation.py (`voc_ap`, `voc_eval`),
itself py-faster-rcnn's `voc_eval.py`, itself the devkit's `VOCevaldet.m`. Per class:

- detections of every image are sorted once by descending score (`np.argsort(-confidence)`, as the reference);
- each detection is matched, in that order, to the ground-truth box of its image with the largest IoU (over *all*
  boxes of that class, difficult ones included); if that IoU is > t: a difficult box makes the detection neither
  TP nor FP, an unmatched box makes it a TP (and the box is taken), an already-taken box makes it a duplicate FP;
  an IoU ≤ t is an FP. Recall divides by the number of non-difficult boxes;
- `use_07_metric=True` (the VOC2007 11-point rule, what detectron2 uses for voc_2007_test at every threshold):
  AP = (1/11) Σ_{r ∈ grid} max_{r' ≥ r} p(r'), 0 where no recall reaches r. The grid is named (`RECALL_GRIDS`):
  "devkit" is MATLAB's `0:0.1:1` of VOCevaldet.m/VOCevalcls.m, "numpy" is detectron2's np.arange(0, 1.1, 0.1)
  (= ssl-transfer's np.linspace(0, 1, 11)); they differ at 0.6 and 0.7 (see RECALL_GRIDS);
- `use_07_metric=False` (VOC2010+ area): precision made monotone from the right, summed over recall steps.

Differences from the reference, none of which changes a number: the ten IoU thresholds are matched in one pass
(the greedy order does not depend on t, only the outcome does), IoUs are computed per image as vectors, and the
11-point maximum is read from a suffix maximum instead of ten masked scans. IoU uses the legacy "+1" pixel
convention of voc_eval (`pixel_inclusive=True`) on the devkit's 1-based XML coordinates; `pixel_inclusive=False`
gives the continuous IoU (used to compare with pycocotools).

A class whose ground truth is all "difficult" (npos = 0): the reference divides by zero, recall is NaN everywhere,
no 11-point threshold is reached and its AP is 0 — detectron2 keeps that 0 in the mean, and so does bench
(`classes_only_difficult` in the details lists them). The area rule has no such convention (the reference's sum
is NaN once the class has a detection), so the `_area` twins leave those classes out of their mean. A class with
no box at all in the evaluated images would get the same 0 in detectron2; bench leaves it out of both means
(`classes_without_ground_truth`): that happens only on subsets such as the miniatures (every class has boxes in
VOC2007 test), where twenty zeros would drown the classes that are there.

The detections scored by detectron2 are not the model's floats but what `PascalVOCDetectionEvaluator.process()`
writes to text and `voc_eval` reads back: `detectron2_text_roundtrip` reproduces that (bench.protocols._detection_evaluate
uses it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ClassDetections", "ClassGroundTruth", "voc_ap", "voc_class_ap", "voc_detection_metrics", "voc_ap_samples",
           "detectron2_text_roundtrip", "VOC_IOU_THRESHOLDS", "RECALL_GRIDS"]

VOC_IOU_THRESHOLDS = tuple(t / 100.0 for t in range(50, 100, 5))   # detectron2's exact floats

# The 11 recall thresholds of the VOC2007 rule, as each reference's float arithmetic makes them. A recall of
# exactly k/n is reached at a grid point only if it is >= that float, so the last bit decides.
RECALL_GRIDS: dict[str, tuple[float, ...]] = {
    # MATLAB's colon builds a:d:b from both ends (a + k·d for the first half, b − k·d for the second, the midpoint
    # (a+b)/2; MathWorks' colonop.m): 0.6 … 0.9 are the doubles nearest the tenths, but 0.3 is 3·0.1 =
    # 0.30000000000000004 there too.
    "devkit": tuple([k * 0.1 for k in range(5)] + [0.5] + [1.0 - k * 0.1 for k in range(4, -1, -1)]),
    # np.arange(0, 1.1, 0.1) (detectron2, py-faster-rcnn) and np.linspace(0, 1, 11) (ssl-transfer) are the same
    # floats: k·0.1, so 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001.
    "numpy": tuple(float(t) for t in np.arange(0.0, 1.1, 0.1)),
}


def recall_grid(name: str) -> np.ndarray:
    try:
        return np.array(RECALL_GRIDS[name])
    except KeyError:
        raise ValueError(f"unknown recall grid {name!r}; one of {sorted(RECALL_GRIDS)}") from None


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


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True, grid: str = "devkit") -> float:
    """AP from a recall/precision curve (detection order). 11-point rule on the named recall grid, or VOC2010+
    area under the curve. NaN recalls (a class with only difficult boxes) reach no grid point: 11-point AP 0."""
    rec, prec = np.asarray(rec, dtype=np.float64), np.asarray(prec, dtype=np.float64)
    if use_07_metric:
        thresholds = recall_grid(grid)
        if rec.size == 0 or np.isnan(rec).all():
            return 0.0
        best_from = np.maximum.accumulate(prec[::-1])[::-1]          # max precision at recall ≥ rec[i]
        first = np.searchsorted(rec, thresholds, side="left")        # rec is non-decreasing
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
                 use_07_metric: bool = True, pixel_inclusive: bool = True, grid: str = "devkit") -> np.ndarray:
    """AP of one class at each IoU threshold, as fractions (T,). A class without non-difficult boxes: 0 by the
    11-point rule (the reference's NaN recall reaches no threshold), NaN by the area rule."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    npos = gt.npos
    if npos == 0:
        return np.full(len(thresholds), 0.0 if use_07_metric else np.nan)
    tp, fp = _match(dets, gt, thresholds, pixel_inclusive)
    tp, fp = np.cumsum(tp, axis=0), np.cumsum(fp, axis=0)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return np.array([voc_ap(rec[:, k], prec[:, k], use_07_metric, grid) for k in range(len(thresholds))])


def voc_detection_metrics(dets: dict[str, ClassDetections], gts: dict[str, ClassGroundTruth], *,
                          thresholds=VOC_IOU_THRESHOLDS, pixel_inclusive: bool = True,
                          grid: str = "devkit") -> tuple[dict, dict]:
    """(metrics in percent, details) for every class in `gts`: AP/AP50/AP75 by the 11-point rule on `grid`, and
    the same by area (`AP_area`, `AP50_area`, `AP75_area`). Classes are averaged with equal weight, as detectron2;
    a class with only difficult boxes counts 0 in the 11-point mean and is left out of the area mean."""
    thresholds = tuple(float(t) for t in thresholds)
    recall_grid(grid)
    empty = ClassDetections(np.array([], dtype=object), np.zeros(0), np.zeros((0, 4)))
    per_class: dict[str, dict[str, np.ndarray]] = {}
    for name, gt in gts.items():
        d = dets.get(name, empty)
        per_class[name] = {"11pt": voc_class_ap(d, gt, thresholds, pixel_inclusive=pixel_inclusive, grid=grid),
                           "area": voc_class_ap(d, gt, thresholds, use_07_metric=False,
                                                pixel_inclusive=pixel_inclusive)}
    absent = [c for c, gt in gts.items() if not any(len(b) for b in gt.boxes.values())]
    only_difficult = [c for c, gt in gts.items() if gt.npos == 0 and c not in absent]
    scored = [c for c in per_class if c not in absent]
    metrics: dict[str, float] = {}
    for rule, suffix in (("11pt", ""), ("area", "_area")):
        members = scored if rule == "11pt" else [c for c in scored if c not in only_difficult]
        mean = (np.mean([per_class[c][rule] for c in members], axis=0) * 100 if members
                else np.full(len(thresholds), np.nan))
        metrics[f"AP{suffix}"] = float(mean.mean())
        for t, v in zip(thresholds, mean):
            if round(t * 100) in (50, 75):
                metrics[f"AP{round(t * 100)}{suffix}"] = float(v)
    details = {"iou_thresholds": list(thresholds), "recall_grid": grid, "recall_thresholds": list(RECALL_GRIDS[grid]),
               "classes_evaluated": scored, "classes_only_difficult": sorted(only_difficult),
               "classes_without_ground_truth": sorted(absent),
               "per_class_AP": {c: dict(zip((f"AP{round(t * 100)}" for t in thresholds),
                                            (float(v) for v in per_class[c]["11pt"] * 100))) for c in scored}}
    return metrics, details


def voc_ap_samples(dets: dict[str, ClassDetections], gts: dict[str, ClassGroundTruth], *, threshold: float = 0.5,
                   pixel_inclusive: bool = True, grid: str = "devkit"):
    """The per-image statistics of the 11-point AP at `threshold` (bench.metrics.bootstrap kind `vocap`): every
    detection's image, class and TP/FP outcome in each class's descending-score order (matching is per image, so a
    resampled test set only reweights these outcomes), and per image and class the count of non-difficult and of
    all boxes. Images are the keys of the ground truth, in their order."""
    from .bootstrap import Samples
    classes = list(gts)
    images = list(next(iter(gts.values())).boxes) if gts else []
    row = {img: i for i, img in enumerate(images)}
    npos = np.zeros((len(images), len(classes)), np.int64)
    nbox = np.zeros_like(npos)
    det_img, det_cls, tp_all, fp_all = [], [], [], []
    empty = ClassDetections(np.array([], dtype=object), np.zeros(0), np.zeros((0, 4)))
    for c, name in enumerate(classes):
        gt = gts[name]
        for img, d in gt.difficult.items():
            npos[row[img], c], nbox[row[img], c] = int((~d.astype(bool)).sum()), len(d)
        d = dets.get(name, empty)
        tp, fp = _match(d, gt, np.array([threshold]), pixel_inclusive)
        order = np.argsort(-np.asarray(d.scores, dtype=np.float64))
        det_img.append(np.array([row[i] for i in np.asarray(d.image_ids)[order]], dtype=np.int64))
        det_cls.append(np.full(len(order), c, np.int64))
        tp_all.append(tp[:, 0].astype(bool))
        fp_all.append(fp[:, 0].astype(bool))
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return Samples("vocap", {"npos": npos, "nbox": nbox, "det_image": cat(det_img, np.int64),
                             "det_class": cat(det_cls, np.int64), "tp": cat(tp_all, bool), "fp": cat(fp_all, bool),
                             "recall_points": recall_grid(grid)},
                   meta={"n": len(images), "grid": grid, "per_image": ["npos", "nbox"]})


def detectron2_text_roundtrip(scores: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, boxes) as detectron2's `voc_eval` reads them back from the result files that
    `PascalVOCDetectionEvaluator.process()` writes: from float32 model outputs in detectron2's 0-based
    coordinates, xmin and ymin get + 1 in float32 (the devkit's 1-based pixels), then the line is
    f"{score:.3f} {xmin:.1f} {ymin:.1f} {xmax:.1f} {ymax:.1f}" and `float()` parses it. The rounded scores tie
    where the model's did not (voc_eval's np.argsort then orders them), and the rounded boxes move IoUs."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    boxes[:, :2] += np.float32(1.0)
    # Python's formatting rounds the exact binary value, as the f-string in detectron2 does; np.round would not.
    read_scores = np.array([float(f"{s:.3f}") for s in scores.tolist()], dtype=np.float64)
    read_boxes = np.array([float(f"{v:.1f}") for v in boxes.reshape(-1).tolist()],
                          dtype=np.float64).reshape(-1, 4)
    return read_scores, read_boxes
