"""Classification metrics in percent."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["accuracy_topk", "mean_per_class_accuracy"]


def accuracy_topk(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                  ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Percent of rows whose label is among the k highest scores (k capped at the number of classes)."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    order = scores.argsort(dim=1, descending=True, stable=True)
    hit = order.eq(labels.view(-1, 1))
    return {k: float(hit[:, :min(k, scores.shape[1])].any(1).float().mean() * 100) for k in ks}


def mean_per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """Mean over the classes present in `labels` of per-class recall, in percent (Kornblith et al.)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    classes = np.unique(labels) if num_classes is None else [c for c in range(num_classes) if (labels == c).any()]
    return float(np.mean([(pred[labels == c] == c).mean() for c in classes]) * 100)
