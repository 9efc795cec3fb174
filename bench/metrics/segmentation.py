"""Semantic-segmentation metrics as mmseg computes them (mmseg 0.x `core/evaluation/metrics.py`,
`intersect_and_union` + `total_area_to_metrics`).

Decisions, all from mmseg: pixels are accumulated over the whole evaluation set (never averaged per image); pixels
whose ground truth is the ignore index (255 after reduce_zero_label) are dropped before counting; the areas are
`torch.histc(…, bins=C, min=0, max=C-1)` of the intersection, the prediction and the label, so a label outside
[0, C) that is not the ignore index is dropped from the label and intersection areas but its pixel still counts in
its predicted class's area (and so in that class's union); IoU_c = |P∩G|_c / |P∪G|_c and Acc_c = |P∩G|_c / |G|_c;
a class absent from both ground truth and prediction has 0/0 = NaN and is left out by the nanmean (mmseg's mIoU);
aAcc = Σ_c |P∩G|_c / Σ_c |G|_c.

The counts live in one confusion matrix of shape (C + 1, C): rows = ground truth 0…C-1 and a last row for the
out-of-range labels, columns = prediction. Predictions come from an argmax over C logits; one outside [0, C) is a
bug upstream (it would alias into another cell of the flattened count) and raises.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["confusion_matrix", "segmentation_scores", "IGNORE_INDEX"]

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes + 1, num_classes) int64 counts: rows = ground truth (the last row: labels outside
    [0, num_classes) other than `ignore_index`), columns = prediction; ignored pixels dropped."""
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long().to(pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.numel()} pixels, ground truth {target.numel()}")
    if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= num_classes):
        bad = int(pred.min()) if int(pred.min()) < 0 else int(pred.max())
        raise ValueError(f"predicted class {bad} outside [0, {num_classes}): predictions must be an argmax over "
                         f"{num_classes} classes")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    target = torch.where((target < 0) | (target >= num_classes), num_classes, target)   # mmseg's histc drops these
    return torch.bincount(target * num_classes + pred,
                          minlength=(num_classes + 1) * num_classes).reshape(num_classes + 1, num_classes)


def segmentation_scores(conf: torch.Tensor | np.ndarray) -> dict[str, object]:
    """mIoU, mAcc, aAcc (percent) and per-class IoU/Acc (NaN for classes absent from both GT and prediction) from a
    (C + 1, C) confusion matrix (a (C, C) one is read as having no out-of-range label)."""
    conf = np.asarray(torch.as_tensor(conf).cpu(), dtype=np.float64)
    c = conf.shape[1]
    if conf.shape not in ((c, c), (c + 1, c)):
        raise ValueError(f"confusion matrix of shape {conf.shape}: expected (C + 1, C) or (C, C)")
    inter = np.diag(conf[:c])
    gt = conf[:c].sum(1)
    union = gt + conf.sum(0) - inter        # the prediction area includes pixels with out-of-range labels
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union          # 0/0 → NaN: class absent from both ground truth and prediction
        acc = inter / gt             # 0/0 → NaN: class absent from the ground truth
        aacc = inter.sum() / gt.sum() if gt.sum() else np.nan
    return {"mIoU": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan"),
            "mAcc": float(np.nanmean(acc) * 100) if np.isfinite(acc).any() else float("nan"),
            "aAcc": float(aacc * 100), "per_class_iou": iou * 100, "per_class_acc": acc * 100,
            "pixels_label_out_of_range": int(conf[c:].sum())}
