"""Robustness metrics of Hendrycks & Dietterich (ICLR 2019): ImageNet-C corruption errors normalised by AlexNet's,
ImageNet-P flip probability and top-5 distance. Errors and rates are fractions in, percent out.

References: hendrycks/robustness ImageNet-C/test.py (per-severity error, `show_performance`), ImageNet-P/test.py
(`flip_prob`, `ranking_dist`, `dist`); AlexNet's ImageNet-C errors from the spreadsheet that
hendrycks/robustness README.md § "Calculating the mCE" links, as transcribed in google-research/augmix
imagenet.py:147-152 (`ALEXNET_ERR`, mean over the 5 severities, same corruption order).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["CORRUPTIONS", "EXTRA_CORRUPTIONS", "ALEXNET_ERR", "ALEXNET_CLEAN_ERR", "P_PERTURBATIONS",
           "corruption_errors", "flip_probability", "top5_distance", "mean_flip_rate"]

# The 15 corruptions that define mCE (augmix imagenet.py:140-145; the 4 extra ones of ImageNet-C/test.py:274-275
# are held out for validation and never enter mCE)
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
# AlexNet's error averaged over severities 1-5 (google-research/augmix imagenet.py:148-152, "Raw AlexNet errors
# taken from https://github.com/hendrycks/robustness"); Σ_s err = 5 × this
ALEXNET_ERR = dict(zip(CORRUPTIONS, (0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                                     0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                                     0.606500)))
# AlexNet's clean ImageNet val error for relative mCE: Hendrycks & Dietterich 2019, Table 1 / Figure 3
# ("AlexNet ... Error 43.5"), printed to one decimal; no code of theirs holds it
ALEXNET_CLEAN_ERR = 0.435
# ImageNet-P/test.py:31-34 lists the perturbations (the paper's 10, then its validation ones); those with 'noise' in
# the name compare every frame with the first (test.py:234, 257), the others each frame with the previous one
P_PERTURBATIONS = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness", "translate",
                   "rotate", "tilt", "scale")


def corruption_errors(errors: Mapping[str, Sequence[float]], clean_error: float | None = None,
                      alexnet: Mapping[str, float] = ALEXNET_ERR,
                      alexnet_clean: float = ALEXNET_CLEAN_ERR) -> dict[str, float]:
    """mCE, relative mCE and the unnormalised mean error (percent) from per-severity error fractions.

    CE_c = Σ_s E_{s,c} / Σ_s E^AlexNet_{s,c}; relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (E^AlexNet_{s,c} −
    E^AlexNet_clean); mCE / relative mCE are their means over the corruptions given that have an AlexNet error
    (all 15 on the real data). `mean_error` is ImageNet-C/test.py's "mCE (unnormalized)": the mean over the
    corruptions of the mean over severities.
    """
    scored = [c for c in errors if c in alexnet]
    out: dict[str, float] = {}
    ces, rel = [], []
    for c in scored:
        errs = np.asarray(errors[c], dtype=np.float64)
        ref_sum = alexnet[c] * len(errs)   # the AlexNet constant is a mean over severities
        ces.append(errs.sum() / ref_sum)
        out[f"CE_{c}"] = 100 * ces[-1]
        if clean_error is not None:
            rel.append((errs - clean_error).sum() / (ref_sum - len(errs) * alexnet_clean))
    if ces:
        out["mCE"] = 100 * float(np.mean(ces))
    if rel:
        out["relative_mCE"] = 100 * float(np.mean(rel))
    if errors:
        out["mean_error"] = 100 * float(np.mean([np.mean(v) for v in errors.values()]))
    return out


def flip_probability(predictions: Sequence[Sequence[int]], noise: bool) -> float:
    """ImageNet-P/test.py `flip_prob` at difficulty 1: per video the fraction of frames j ≥ 2 whose top-1 differs
    from frame 1 (noise) or from frame j−1 (other perturbations), averaged over videos. A fraction."""
    per_video = []
    for preds in predictions:
        preds = np.asarray(preds)
        ref = preds[:1] if noise else preds[:-1]
        per_video.append(float(np.mean(preds[1:] != ref)))
    return float(np.mean(per_video))


def _top5_rank_distance(ranks_a: np.ndarray, ranks_b: np.ndarray) -> int:
    """ImageNet-P/test.py `dist(perm2[perm1_inv], 'top5')`: over the classes in frame a's top 5 (in a's order),
    how far each one's rank in frame b moved in or out of the top 5, counted by the cumulative top-5 indicator."""
    order_a = np.argsort(ranks_a, kind="stable")          # class ids by frame a's rank (perm1_inv)
    sigma = ranks_b[order_a]                               # b's rank of a's i-th class, 1-based
    cum = np.minimum(np.arange(len(ranks_a)), 5)           # cum_sum_top5[k] = min(k, 5)
    return int(np.abs(cum[:5] - cum[sigma[:5] - 1]).sum())


def top5_distance(ranks: Sequence[np.ndarray], noise: bool) -> float:
    """ImageNet-P/test.py `ranking_dist(mode='top5')` at difficulty 1; `ranks` per video is (frames, classes) of
    1-based ranks (rankdata(-logits, 'ordinal')). Mean over videos of the mean distance between compared frames."""
    per_video = []
    for r in ranks:
        r = np.asarray(r)
        pairs = [(0, j) for j in range(1, len(r))] if noise else [(j - 1, j) for j in range(1, len(r))]
        per_video.append(np.mean([_top5_rank_distance(r[a], r[b]) for a, b in pairs]))
    return float(np.mean(per_video))


def mean_flip_rate(flip_probs: Mapping[str, float], alexnet: Mapping[str, float]) -> dict[str, float]:
    """FR_p = FP_p / FP^AlexNet_p and mFR = their mean over the perturbations with an AlexNet value (percent)."""
    out = {f"FR_{p}": 100 * fp / alexnet[p] for p, fp in flip_probs.items() if p in alexnet}
    if out:
        out["mFR"] = float(np.mean(list(out.values())))
    return out
