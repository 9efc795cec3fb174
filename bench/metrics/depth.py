"""Monocular-depth metrics as the DINOv2 depth evaluation computes them.

DINOv2 evaluates its depth heads with the Monocular-Depth-Estimation-Toolbox (zhyever/Monocular-Depth-Estimation-
Toolbox, the mmseg-style code dinov2/eval/depth was written against). Its decisions, followed here:
- per image: the valid pixels are gt in (min_depth, max_depth) inside the crop (`eval_mask`: NYU Eigen crop
  rows 45:471, cols 41:601 of the 480×640 map; KITTI Garg crop on the 352×1216 KB-cropped map), then
  `calculate(gt, pred)` (depth/core/evaluation/metrics.py:7-32): δ_i = mean(max(gt/pred, pred/gt) < 1.25^i),
  AbsRel = mean(|gt−pred|/gt), SqRel = mean((gt−pred)²/gt), RMSE = sqrt(mean((gt−pred)²)),
  RMSE log = sqrt(mean((ln gt − ln pred)²)), SILog = 100·sqrt(mean(e²) − mean(e)²) with e = ln pred − ln gt
  (NaN → 0), log10 = mean(|log10 gt − log10 pred|); an image with no valid pixel gives NaN for all of them;
- over the set: the nanmean of the per-image values (pre_eval_to_metrics, metrics.py:76-95), so every image
  weighs the same whatever its number of valid pixels.
δ thresholds are reported in percent (bench's unit for fractions), the errors in metres / as ratios.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DEPTH_METRICS", "depth_image_metrics", "aggregate_depth", "eval_mask", "kb_crop", "CROPS"]

DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10")
CROPS = ("none", "eigen_nyu", "garg", "eigen_kitti")


def depth_image_metrics(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The toolbox's `calculate` on the valid pixels of one image (1-D arrays, gt > 0). δ in percent.

    Computed in the inputs' dtype, as the toolbox does (float32 maps there): a ratio that is exactly 1.25 in
    float32 may not be in float64, and δ counts it differently."""
    gt, pred = np.asarray(gt).ravel(), np.asarray(pred).ravel()
    if gt.size == 0:
        return {k: float("nan") for k in DEPTH_METRICS}
    ratio = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    silog = np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100
    return {"d1": 100 * float(np.mean(ratio < 1.25)), "d2": 100 * float(np.mean(ratio < 1.25 ** 2)),
            "d3": 100 * float(np.mean(ratio < 1.25 ** 3)),
            "abs_rel": float(np.mean(np.abs(gt - pred) / gt)), "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
            "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))), "rmse_log": float(np.sqrt(np.mean(err ** 2))),
            "silog": 0.0 if np.isnan(silog) else float(silog),
            "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred))))}


def kb_crop(depth: np.ndarray) -> np.ndarray:
    """KITTI's KB crop (toolbox kitti.py:227-235): the bottom 352 rows, the centred 1216 columns."""
    h, w = depth.shape[-2:]
    top, left = int(h - 352), int((w - 1216) / 2)
    return depth[..., top:top + 352, left:left + 1216]


def eval_mask(gt: np.ndarray, min_depth: float, max_depth: float, crop: str) -> np.ndarray:
    """Valid pixels: min_depth < gt < max_depth, inside the evaluation crop (toolbox nyu.py:204-221, kitti.py:237-251).

    `eigen_nyu` is the fixed [45:471, 41:601] window of the 480×640 NYU maps; `garg` / `eigen_kitti` are fractions
    of the map's height and width."""
    gt = np.asarray(gt)
    valid = (gt > min_depth) & (gt < max_depth)
    if crop == "none":
        return valid
    h, w = gt.shape
    window = np.zeros_like(valid)
    if crop == "eigen_nyu":
        window[45:471, 41:601] = True
    elif crop == "garg":
        window[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = True
    elif crop == "eigen_kitti":
        window[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = True
    else:
        raise ValueError(f"unknown depth crop {crop!r}; one of {CROPS}")
    return valid & window


def aggregate_depth(per_image: list[dict[str, float]]) -> dict[str, float]:
    """nanmean over images of each metric (NaN when no image had a valid pixel)."""
    out = {}
    for k in DEPTH_METRICS:
        vals = np.array([m[k] for m in per_image], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out
