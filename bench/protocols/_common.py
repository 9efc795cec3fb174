"""Helpers several protocols share (logreg, linear, svm, semisup, layers): the seeded hold-out split and top-1/5."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BenchError

__all__ = ["holdout_split", "topk_percent", "topk_hits", "topk_samples", "EpochHits"]


def holdout_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): a seeded random `fraction` of range(n) held out (DINOv2: 10%, seed 0)."""
    if not 0 < fraction < 1:
        raise BenchError(f"hold-out fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def topk_percent(scores: torch.Tensor, y) -> dict[str, float]:
    from ..metrics.classification import accuracy_topk
    acc = accuracy_topk(scores.float().cpu(), torch.as_tensor(y), ks=(1, 5))
    return {"top1": acc[1], "top5": acc[5]}


def topk_hits(scores: torch.Tensor, y, ks=(1, 5)) -> dict[int, np.ndarray]:
    """{k: bool array}: whether each row's label is among its k highest scores, ties broken as accuracy_topk does
    (a stable descending sort), so the mean of the array is exactly accuracy_topk's number."""
    scores, y = torch.as_tensor(scores).float().cpu(), torch.as_tensor(y).long().cpu()
    order = scores.argsort(dim=1, descending=True, stable=True)
    hit = order.eq(y.view(-1, 1))
    return {k: hit[:, :min(k, scores.shape[1])].any(1).numpy() for k in ks}


def topk_samples(scores: torch.Tensor, y) -> dict:
    """{"top1": Samples, "top5": Samples} of per-sample correctness, for the record's bootstrap intervals."""
    from ..metrics.bootstrap import mean_samples
    hits = topk_hits(scores, y)
    return {"top1": mean_samples(hits[1]), "top5": mean_samples(hits[5])}


class EpochHits:
    """Per-sample (top-1, top-5) correctness of the evaluated epochs a training loop keeps for the record's
    intervals: the last epoch's and the best one's by top-1 (first maximum), never more (50,000 × 2 bools each).
    Epochs evaluated before a resume, or under several processes, have none (`batches()` returns None)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.last: tuple | None = None
        self.best: tuple | None = None
        self._best_top1 = -1.0

    def batches(self) -> list | None:
        return [] if self.enabled else None

    def add(self, epoch: int, top1: float, batches: list | None) -> None:
        if batches is None:
            self.last = None
            return
        h1 = np.concatenate([b[0] for b in batches]) if batches else np.zeros(0, bool)
        h5 = np.concatenate([b[1] for b in batches]) if batches else np.zeros(0, bool)
        self.last = (epoch, h1, h5)
        if top1 > self._best_top1:
            self._best_top1, self.best = top1, self.last

    def samples(self, final_epoch: int, best_epoch: int, names: dict[str, tuple[str, str]]) -> dict:
        """{metric: Samples} for names {"final": (top1, top5), "best": (top1_max, top5_at_max)} whose epoch's hits
        were kept."""
        from ..metrics.bootstrap import mean_samples
        out = {}
        for which, epoch in (("final", final_epoch), ("best", best_epoch)):
            kept = self.last if which == "final" else self.best
            if which in names and kept is not None and kept[0] == epoch:
                out[names[which][0]], out[names[which][1]] = mean_samples(kept[1]), mean_samples(kept[2])
        return out
