"""Keypoint-transfer PCK on SPair-71k as DIFT's eval_spair.py counts it (Tsingularity/dift:eval_spair.py `main`).

A transferred keypoint is correct when its distance to the target keypoint, divided by the threshold size, is
≤ α: the size is max(bbox height, bbox width) of the target's `trg_bndbox` (PCK@α_bbox, the SPair standard) or
max(image height, width) of the target (PCK@α_img). Two averages, both printed by DIFT: per point (correct /
total keypoints, within a category or over all) and per image (each pair's fraction, then the mean over pairs).
Percent.
"""
from __future__ import annotations

import numpy as np

__all__ = ["pck_correct", "pck_summary"]


def pck_correct(pred_xy: np.ndarray, gt_xy: np.ndarray, size: float, alpha: float = 0.1) -> np.ndarray:
    """Boolean per keypoint: ‖pred − gt‖ / size ≤ alpha (DIFT: `(dist / threshold) <= 0.1`)."""
    pred_xy, gt_xy = np.asarray(pred_xy, dtype=np.float64), np.asarray(gt_xy, dtype=np.float64)
    dist = np.sqrt(((pred_xy - gt_xy) ** 2).sum(-1))
    return dist / float(size) <= alpha


def pck_summary(correct_per_pair: list[np.ndarray], categories: list[str]) -> dict[str, object]:
    """{'per_point': %, 'per_image': %, 'per_category': {cat: {'per_point', 'per_image'}}, 'category_mean': %}.

    `category_mean` is the mean over categories of their per-point PCK (the number the per-category tables
    average)."""
    cats: dict[str, list[np.ndarray]] = {}
    for c, ok in zip(categories, correct_per_pair):
        cats.setdefault(c, []).append(np.asarray(ok, dtype=bool))
    per_cat = {}
    for c in sorted(cats):
        pairs = [p for p in cats[c] if p.size]
        points = np.concatenate(pairs) if pairs else np.zeros(0, bool)
        per_cat[c] = {"per_point": 100 * float(points.mean()) if points.size else float("nan"),
                      "per_image": 100 * float(np.mean([p.mean() for p in pairs])) if pairs else float("nan")}
    every = [np.asarray(p, dtype=bool) for p in correct_per_pair if np.size(p)]
    allpts = np.concatenate(every) if every else np.zeros(0, bool)
    return {"per_point": 100 * float(allpts.mean()) if allpts.size else float("nan"),
            "per_image": 100 * float(np.mean([p.mean() for p in every])) if every else float("nan"),
            "per_category": per_cat,
            "category_mean": float(np.nanmean([v["per_point"] for v in per_cat.values()])) if per_cat
            else float("nan")}
