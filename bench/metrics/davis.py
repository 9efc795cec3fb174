"""DAVIS-2017 semi-supervised J and F as the official devkit computes them (davisvideochallenge/davis2017-evaluation).

- J (region similarity, metrics.py:6-37): |S∩G| / |S∪G| per frame; an empty union counts as 1.
- F (boundary F-measure, metrics.py:57-119): one-pixel boundaries of each mask by `_seg2bmap` (metrics.py:122-178;
  a pixel is boundary where it differs from its east, south or south-east neighbour, last row/column compared
  only along them), each boundary dilated by a disk of radius ceil(0.008 · image diagonal) (`cv2.dilate` with
  skimage's `disk`; outside the image counts as background), precision = predicted boundary pixels within the
  dilated ground truth boundary / predicted boundary pixels, recall the other way round; no predicted boundary:
  precision 1 and recall 0 (1 and 1 when neither has one, 0 and 1 when only the ground truth has none).
  The devkit matches boundaries by this dilation, not by the bipartite matching of the BSDS benchmark; the
  Hungarian assignment in evaluation.py:63 is for the unsupervised task only.
- Per object: the mean over the frames between the first and the last (both excluded, evaluation.py:85), NaN
  frames dropped (utils.py:135-161 `db_statistics`, which also gives recall = mean(J > 0.5) and decay);
  J&F-Mean = (mean over objects of J-Mean + mean over objects of F-Mean) / 2 (evaluation_method.py:43).
Values are fractions in the devkit; reported here in percent.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

__all__ = ["db_eval_iou", "f_measure", "seg2bmap", "disk", "db_statistics", "davis_summary"]


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray) -> np.ndarray | float:
    """Jaccard index of boolean masks over the last two axes; 1 where the union is empty."""
    a, s = np.asarray(annotation).astype(bool), np.asarray(segmentation).astype(bool)
    if a.shape != s.shape:
        raise ValueError(f"annotation {a.shape} and segmentation {s.shape} differ in shape")
    inter = np.sum(a & s, axis=(-2, -1))
    union = np.sum(a | s, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    if np.ndim(j) == 0:
        return 1.0 if union == 0 else float(j)
    j[union == 0] = 1
    return j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (Martin's seg2bmap as the devkit has it, same-size output)."""
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk: the pixels within `radius` of the centre, (2r+1)² array."""
    r = int(radius)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def f_measure(segmentation: np.ndarray, annotation: np.ndarray, bound_th: float = 0.008) -> float:
    """Boundary F-measure of one frame (binary masks)."""
    seg, gt = np.asarray(segmentation).astype(bool), np.asarray(annotation).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(seg.shape))
    fg_b, gt_b = seg2bmap(seg), seg2bmap(gt)
    se = disk(bound_pix)
    # a binary dilation with a symmetric structuring element and a background border is cv2.dilate's result
    fg_dil = ndimage.binary_dilation(fg_b, structure=se, border_value=0)
    gt_dil = ndimage.binary_dilation(gt_b, structure=se, border_value=0)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_b & gt_dil) / float(n_fg)
        recall = np.sum(gt_b & fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values, as davis2017/utils.py `db_statistics`."""
    v = np.asarray(per_frame, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.uint8)
        bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
        decay = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(mean), float(recall), float(decay)


def davis_summary(j_per_object: dict[str, np.ndarray], f_per_object: dict[str, np.ndarray]) -> dict[str, float]:
    """Devkit global numbers (percent) from per-object per-frame J and F (frames already without first/last)."""
    stats_j = {k: db_statistics(v) for k, v in j_per_object.items()}
    stats_f = {k: db_statistics(v) for k, v in f_per_object.items()}
    jm = np.mean([s[0] for s in stats_j.values()])
    fm = np.mean([s[0] for s in stats_f.values()])
    return {"J&F": 100 * float((jm + fm) / 2), "J": 100 * float(jm),
            "J_recall": 100 * float(np.mean([s[1] for s in stats_j.values()])),
            "J_decay": 100 * float(np.mean([s[2] for s in stats_j.values()])),
            "F": 100 * float(fm), "F_recall": 100 * float(np.mean([s[1] for s in stats_f.values()])),
            "F_decay": 100 * float(np.mean([s[2] for s in stats_f.values()]))}
