"""Helpers several protocols share (logreg, linear, svm, semisup, layers): the seeded hold-out split and top-1/5."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import BenchError

__all__ = ["holdout_split", "topk_percent"]


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
