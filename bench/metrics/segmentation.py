"""Semantic-segmentation metrics as mmseg computes them (mmseg `core/evaluation/metrics.py`, `eval_metrics`).

Decisions, all from mmseg: pixels are accumulated into one confusion matrix over the whole evaluation set (never
averaged per image); pixels whose ground truth is the ignore index (255 after reduce_zero_label) are dropped
before counting; IoU_c = |P∩G|_c / |P∪G|_c and Acc_c = |P∩G|_c / |G|_c; a class absent from both ground truth and
prediction has 0/0 = NaN and is left out by the nanmean (mmseg's mIoU); aAcc = Σ_c |P∩G|_c / Σ_c |G|_c.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["confusion_matrix", "segmentation_scores", "IGNORE_INDEX"]

IGNORE_INDEX = 255


def confusion_matrix(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = ground truth, columns = prediction; ignored pixels dropped."""
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long().to(pred.device)
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.numel() and (int(target.max()) >= num_classes or int(target.min()) < 0):
        raise ValueError(f"label {int(target.max())} outside [0, {num_classes}) and not the ignore index "
                         f"{ignore_index}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def segmentation_scores(conf: torch.Tensor | np.ndarray) -> dict[str, object]:
    """mIoU, mAcc, aAcc (percent) and per-class IoU/Acc (NaN for classes absent from both GT and prediction)."""
    conf = np.asarray(torch.as_tensor(conf).cpu(), dtype=np.float64)
    inter = np.diag(conf)
    gt = conf.sum(1)
    union = gt + conf.sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union          # 0/0 → NaN: class absent from both ground truth and prediction
        acc = inter / gt             # 0/0 → NaN: class absent from the ground truth
        aacc = inter.sum() / gt.sum() if gt.sum() else np.nan
    return {"mIoU": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan"),
            "mAcc": float(np.nanmean(acc) * 100) if np.isfinite(acc).any() else float("nan"),
            "aAcc": float(aacc * 100), "per_class_iou": iou * 100, "per_class_acc": acc * 100}
