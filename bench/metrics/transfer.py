"""Transfer metrics in percent: VOC2007 11-point mean AP (multi-label, one-vs-rest) and per-dataset dispatch.

The 11-point AP follows the VOC2007 devkit `VOCevalcls.m` + `VOCap` for 2007: rank images by descending score,
tp = label > 0, fp = label < 0 (difficult images, label 0, count as neither), precision and recall from the
cumulative sums, AP = (1/11) Σ_{t ∈ {0, 0.1, …, 1}} max{precision at recall ≥ t} (0 when no such point).
Ties are ranked in input order (a stable sort, as MATLAB's `sort` is). mean per-class accuracy comes from
`bench.metrics.classification`.
"""
from __future__ import annotations

import numpy as np

from .classification import mean_per_class_accuracy

__all__ = ["voc07_11point_ap", "voc07_mean_ap", "transfer_metric", "TRANSFER_METRICS"]

TRANSFER_METRICS = ("top1", "mean_per_class_acc", "mAP_11pt")


def voc07_11point_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """11-point AP (fraction in [0, 1]) of one class; labels 1 = positive, -1 = negative, 0 = difficult."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    order = np.argsort(-scores, kind="stable")
    gt = labels[order]
    tp, fp = np.cumsum(gt > 0), np.cumsum(gt < 0)
    n_pos = int((labels > 0).sum())
    if n_pos == 0:
        return float("nan")                  # undefined; the caller decides (VOC test has positives everywhere)
    rec = tp / n_pos
    prec = tp / np.maximum(tp + fp, 1)     # 0/0 only before the first non-difficult image: precision 0 there
    ap = 0.0
    for t in np.linspace(0, 1, 11):
        mask = rec >= t        # t as np.linspace/np.arange make it (0.1·3 > 0.3), as in ssl-transfer/detectron2
        ap += (prec[mask].max() if mask.any() else 0.0) / 11
    return float(ap)


def voc07_mean_ap(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
    """(mean over classes in percent, per-class AP in percent) for (N, C) scores and devkit labels."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, C)")
    aps = [100 * voc07_11point_ap(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    valid = [a for a in aps if np.isfinite(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def transfer_metric(metric: str, scores: np.ndarray, labels: np.ndarray) -> float:
    """The dataset's metric from decision scores: top1 / mean_per_class_acc (N, C) vs (N,), mAP_11pt (N, C)²."""
    if metric == "mAP_11pt":
        return voc07_mean_ap(scores, labels)[0]
    pred = np.asarray(scores).argmax(1)
    labels = np.asarray(labels)
    if metric == "top1":
        return float((pred == labels).mean() * 100)
    if metric == "mean_per_class_acc":
        return mean_per_class_accuracy(pred, labels)
    raise ValueError(f"unknown transfer metric {metric!r}; one of {TRANSFER_METRICS}")
