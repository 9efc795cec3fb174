"""Transfer metrics in percent: VOC2007 11-point mean AP (multi-label, one-vs-rest) and per-dataset dispatch.

VOC2007 classification AP has two definitions in the papers' code, both offered (`VOC07_DEFINITIONS`):

- "devkit" (`VOCevalcls.m` + `VOCap` for 2007): rank images by descending score, tp = label > 0, fp = label < 0
  (difficult images, label 0, count as neither), precision and recall from the cumulative sums,
  AP = (1/11) Σ_{t ∈ grid} max{precision at recall ≥ t} (0 when no such point). Ties are ranked in input order
  (a stable sort, as MATLAB's `sort` is).
- "ssl-transfer" (`linusericsson/ssl-transfer:linear.py`, `voc_eval_cls`, with `datasets/voc2007.py` targets
  `label == 1`): difficult images are negatives; the curve is sklearn's `precision_recall_curve`, which groups
  tied scores into one threshold (plus its precision-1 point at recall 0); the same 11-point rule on
  np.linspace(0, 1, 11).

The recall grid is named separately (bench.metrics.detection.RECALL_GRIDS: "devkit" = MATLAB's 0:0.1:1, "numpy" =
np.linspace / np.arange). A class without positives has no AP under either definition (the devkit divides by
zero; ssl-transfer's NaN recall gives 0): it is NaN here and left out of the mean; VOC2007 has positives for
every class in every split, so this only matters on subsets. mean per-class accuracy comes from
`bench.metrics.classification`.
"""
from __future__ import annotations

import numpy as np

from .classification import mean_per_class_accuracy
from .detection import recall_grid

__all__ = ["voc07_11point_ap", "ssl_transfer_voc07_ap", "voc07_mean_ap", "transfer_metric", "TRANSFER_METRICS",
           "VOC07_DEFINITIONS"]

TRANSFER_METRICS = ("top1", "mean_per_class_acc", "mAP_11pt")
VOC07_DEFINITIONS = ("devkit", "ssl-transfer")


def _eleven_point(rec: np.ndarray, prec: np.ndarray, grid: str) -> float:
    ap = 0.0
    for t in recall_grid(grid):
        mask = rec >= t
        ap += (prec[mask].max() if mask.any() else 0.0) / 11
    return float(ap)


def voc07_11point_ap(scores: np.ndarray, labels: np.ndarray, grid: str = "devkit") -> float:
    """Devkit 11-point AP (fraction in [0, 1]) of one class; labels 1 = positive, -1 = negative, 0 = difficult."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    order = np.argsort(-scores, kind="stable")
    gt = labels[order]
    tp, fp = np.cumsum(gt > 0), np.cumsum(gt < 0)
    n_pos = int((labels > 0).sum())
    if n_pos == 0:
        return float("nan")                  # undefined; the caller decides (VOC test has positives everywhere)
    rec = tp / n_pos
    prec = tp / np.maximum(tp + fp, 1)     # 0/0 only before the first non-difficult image: precision 0 there
    return _eleven_point(rec, prec, grid)


def ssl_transfer_voc07_ap(scores: np.ndarray, labels: np.ndarray, grid: str = "numpy") -> float:
    """ssl-transfer's 11-point AP of one class: devkit labels → `label == 1` (difficult = negative), sklearn's
    precision_recall_curve, 11-point rule on `grid` (theirs: np.linspace(0, 1, 11) = "numpy")."""
    from sklearn.metrics import precision_recall_curve
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    y = (labels == 1).astype(int)
    if not y.any():
        return float("nan")
    prec, rec, _ = precision_recall_curve(y, scores)
    return _eleven_point(rec, prec, grid)


def voc07_mean_ap(scores: np.ndarray, labels: np.ndarray, definition: str = "devkit",
                  grid: str = "devkit") -> tuple[float, list[float]]:
    """(mean over classes in percent, per-class AP in percent) for (N, C) scores and devkit labels (1/0/-1)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, C)")
    if definition not in VOC07_DEFINITIONS:
        raise ValueError(f"unknown VOC07 definition {definition!r}; one of {VOC07_DEFINITIONS}")
    ap_fn = voc07_11point_ap if definition == "devkit" else ssl_transfer_voc07_ap
    aps = [100 * ap_fn(scores[:, c], labels[:, c], grid) for c in range(scores.shape[1])]
    valid = [a for a in aps if np.isfinite(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def transfer_metric(metric: str, scores: np.ndarray, labels: np.ndarray, *, voc07_definition: str = "devkit",
                    grid: str = "devkit") -> float:
    """The dataset's metric from decision scores: top1 / mean_per_class_acc (N, C) vs (N,), mAP_11pt (N, C)²."""
    if metric == "mAP_11pt":
        return voc07_mean_ap(scores, labels, voc07_definition, grid)[0]
    pred = np.asarray(scores).argmax(1)
    labels = np.asarray(labels)
    if metric == "top1":
        return float((pred == labels).mean() * 100)
    if metric == "mean_per_class_acc":
        return mean_per_class_accuracy(pred, labels)
    raise ValueError(f"unknown transfer metric {metric!r}; one of {TRANSFER_METRICS}")
