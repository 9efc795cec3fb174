"""Depth, DAVIS and PCK metrics against independent transcriptions of the reference code, on random cases.

The references are written out below from the published code, loop by loop where the original loops
(zhyever/Monocular-Depth-Estimation-Toolbox depth/core/evaluation/metrics.py `calculate` + `pre_eval_to_metrics`
and depth/datasets/{nyu,kitti}.py `eval_mask`; davisvideochallenge/davis2017-evaluation davis2017/metrics.py and
utils.py `db_statistics`, with cv2.dilate spelt out as a max over the kernel; Tsingularity/dift eval_spair.py).
bench's versions are vectorised (scipy dilation, numpy masks), so agreement is not a copy checking itself.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics.correspondence import pck_correct, pck_summary
from bench.metrics.davis import davis_summary, db_eval_iou, db_statistics, f_measure, seg2bmap
from bench.metrics.depth import aggregate_depth, depth_image_metrics, eval_mask, kb_crop

# ------------------------------------------------------------------ depth reference (toolbox)


def ref_calculate(gt, pred):
    if gt.shape[0] == 0:
        return [np.nan] * 9
    thresh = np.maximum((gt / pred), (pred / gt))
    a1, a2, a3 = (thresh < 1.25).mean(), (thresh < 1.25 ** 2).mean(), (thresh < 1.25 ** 3).mean()
    abs_rel = np.mean(np.abs(gt - pred) / gt)
    sq_rel = np.mean(((gt - pred) ** 2) / gt)
    rmse = np.sqrt(((gt - pred) ** 2).mean())
    rmse_log = np.sqrt(((np.log(gt) - np.log(pred)) ** 2).mean())
    err = np.log(pred) - np.log(gt)
    silog = np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2) * 100
    if np.isnan(silog):
        silog = 0
    log_10 = (np.abs(np.log10(gt) - np.log10(pred))).mean()
    return a1, a2, a3, abs_rel, rmse, log_10, rmse_log, silog, sq_rel


def ref_eval_mask(depth_gt, min_depth, max_depth, garg, eigen, kitti):
    valid_mask = np.logical_and(depth_gt > min_depth, depth_gt < max_depth)
    if garg or eigen:
        h, w = depth_gt.shape
        m = np.zeros(valid_mask.shape)
        if garg:
            m[int(0.40810811 * h):int(0.99189189 * h), int(0.03594771 * w):int(0.96405229 * w)] = 1
        elif eigen and not kitti:
            m[45:471, 41:601] = 1
        elif eigen:
            m[int(0.3324324 * h):int(0.91351351 * h), int(0.0359477 * w):int(0.96405229 * w)] = 1
        valid_mask = np.logical_and(valid_mask, m)
    return valid_mask


def ref_metrics(gt, pred, min_depth, max_depth):
    mask = np.logical_and(gt > min_depth, gt < max_depth)
    return ref_calculate(gt[mask], pred[mask])


def _mine_to_ref_order(m):
    return [m["d1"] / 100, m["d2"] / 100, m["d3"] / 100, m["abs_rel"], m["rmse"], m["log10"], m["rmse_log"],
            m["silog"], m["sq_rel"]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dataset", ["nyu", "kitti_garg", "kitti_eigen"])
def test_depth_metrics_match_the_toolbox(seed, dataset):
    rng = np.random.default_rng(seed)
    kitti = dataset.startswith("kitti")
    h, w = (375, 1242) if kitti else (480, 640)
    max_d = 80.0 if kitti else 10.0
    images_ref, images_mine = [], []
    for i in range(3):
        gt = rng.uniform(0, max_d * 1.1, (h, w)).astype(np.float32)
        gt[rng.random((h, w)) < 0.3] = 0                      # sparse lidar / holes
        if i == 2 and seed % 2:
            gt[:] = 0                                         # an image with no valid pixel: NaN, left out
        pred = np.clip(gt * rng.uniform(0.7, 1.4, (h, w)), 1e-3, max_d).astype(np.float32)
        if seed == 0:
            pred[::7] = gt[::7]                                # exact hits: ratio ties at 1, and at 1.25 below
            pred[1::7] = gt[1::7] * 1.25
        if kitti:
            gt, pred = kb_crop(gt), kb_crop(pred)
        mask = ref_eval_mask(gt, 1e-3, max_d, garg=dataset == "kitti_garg", eigen=dataset != "kitti_garg",
                             kitti=kitti)
        images_ref.append(ref_metrics(gt[mask], pred[mask], 1e-3, max_d))
        crop = {"nyu": "eigen_nyu", "kitti_garg": "garg", "kitti_eigen": "eigen_kitti"}[dataset]
        mine_mask = eval_mask(gt, 1e-3, max_d, crop)
        np.testing.assert_array_equal(mine_mask, mask)
        images_mine.append(depth_image_metrics(gt[mine_mask], pred[mine_mask]))
    for r, m in zip(images_ref, images_mine):      # per image: the same float32 arithmetic, bit for bit
        np.testing.assert_allclose(_mine_to_ref_order(m), np.asarray(r, dtype=np.float64), rtol=0, atol=1e-9)
    # over images: the toolbox's nanmean, taken here in float64 (the toolbox's own runs in float32, whose last
    # bits are rounding, not a definition)
    ref = [np.nanmean(np.asarray(col, dtype=np.float64)) for col in zip(*images_ref)]
    mine = _mine_to_ref_order(aggregate_depth(images_mine))
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-9)


def test_depth_hand_worked_and_degenerate():
    gt, pred = np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.5, 2.0])
    m = depth_image_metrics(gt, pred)
    assert m["d1"] == pytest.approx(100 / 3)              # ratios 1, 1.25 (not < 1.25), 2
    assert m["d2"] == pytest.approx(100 * 2 / 3) and m["d3"] == pytest.approx(100 * 2 / 3)   # 2 ≥ 1.25³
    assert m["abs_rel"] == pytest.approx((0 + 0.25 + 0.5) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 4) / 3))
    assert depth_image_metrics(np.array([2.0]), np.array([2.0]))["silog"] == 0.0
    assert all(math.isnan(v) for v in depth_image_metrics(np.zeros(0), np.zeros(0)).values())
    assert kb_crop(np.zeros((375, 1242))).shape == (352, 1216)


# ------------------------------------------------------------------ DAVIS reference (devkit)


def ref_seg2bmap(seg):
    seg = seg.astype(bool)
    seg[seg > 0] = 1
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def ref_dilate(img, radius):
    """cv2.dilate(img, skimage disk(radius)): max over the kernel's support, pixels outside the image ignored."""
    h, w = img.shape
    out = np.zeros_like(img)
    offs = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dy * dy + dx * dx <= radius * radius]
    for y in range(h):
        for x in range(w):
            out[y, x] = max((img[y + dy, x + dx] for dy, dx in offs if 0 <= y + dy < h and 0 <= x + dx < w),
                            default=0)
    return out


def ref_f_measure(fg, gt, bound_th=0.008):
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_b, gt_b = ref_seg2bmap(fg), ref_seg2bmap(gt)
    fg_dil = ref_dilate(fg_b.astype(np.uint8), int(bound_pix))
    gt_dil = ref_dilate(gt_b.astype(np.uint8), int(bound_pix))
    gt_match, fg_match = gt_b * fg_dil, fg_b * gt_dil
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if p + r == 0 else 2 * p * r / (p + r)


def ref_iou(a, s):
    a, s = a.astype(bool), s.astype(bool)
    inters, union = np.sum(a & s, axis=(-2, -1)), np.sum(a | s, axis=(-2, -1))
    with np.errstate(invalid="ignore"):
        j = inters / union
    if j.ndim == 0:
        return 1 if np.isclose(union, 0) else j
    j[np.isclose(union, 0)] = 1
    return j


def _blobs(rng, h, w, kind):
    if kind == "empty":
        return np.zeros((h, w), bool)
    if kind == "full":
        return np.ones((h, w), bool)
    m = np.zeros((h, w), bool)
    for _ in range(rng.integers(1, 4)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[max(0, y - rng.integers(1, 8)):y + rng.integers(1, 8), max(0, x - rng.integers(1, 8)):x + rng.integers(1, 8)] = 1
    return m ^ (rng.random((h, w)) < 0.02)


@pytest.mark.parametrize("seed", range(8))
def test_davis_j_and_f_match_the_devkit(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(20, 48)), int(rng.integers(20, 64))
    kinds = ["blob", "blob", "empty", "full"]
    for ka in kinds:
        for ks in kinds:
            a, s = _blobs(rng, h, w, ka), _blobs(rng, h, w, ks)
            assert abs(db_eval_iou(a, s) - ref_iou(a, s)) <= 1e-12
            assert abs(f_measure(s, a) - ref_f_measure(s, a)) <= 1e-12
            np.testing.assert_array_equal(seg2bmap(s), ref_seg2bmap(s))
    stack_a = np.stack([_blobs(rng, h, w, "blob") for _ in range(5)] + [np.zeros((h, w), bool)])
    stack_s = np.stack([_blobs(rng, h, w, "blob") for _ in range(5)] + [np.zeros((h, w), bool)])
    np.testing.assert_allclose(db_eval_iou(stack_a, stack_s), ref_iou(stack_a, stack_s), atol=1e-12)


def ref_db_statistics(v):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        M = np.nanmean(v)
        O = np.nanmean(v > 0.5)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(0, 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        D = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return M, O, D


@pytest.mark.parametrize("seed", range(5))
def test_davis_statistics_and_summary(seed):
    rng = np.random.default_rng(seed)
    js = {f"seq{i}_{o}": rng.random(int(rng.integers(4, 30))) for i in range(3) for o in (1, 2)}
    fs = {k: rng.random(len(v)) for k, v in js.items()}
    js["seq0_1"][2] = 0.5                                        # a tie at the recall threshold (not > 0.5)
    for k in js:
        np.testing.assert_allclose(db_statistics(js[k]), ref_db_statistics(js[k]), atol=1e-12)
    s = davis_summary(js, fs)
    jm = np.mean([ref_db_statistics(v)[0] for v in js.values()])
    fm = np.mean([ref_db_statistics(v)[0] for v in fs.values()])
    assert abs(s["J&F"] - 100 * (jm + fm) / 2) <= 1e-9 and abs(s["J"] - 100 * jm) <= 1e-9


def test_f_measure_hand_worked():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    assert f_measure(a, a) == 1.0 and db_eval_iou(a, a) == 1.0
    assert f_measure(np.zeros_like(a), a) == 0.0                 # nothing predicted: precision 1, recall 0
    assert f_measure(np.zeros_like(a), np.zeros_like(a)) == 1.0 and db_eval_iou(a & False, a & False) == 1.0


# ------------------------------------------------------------------ PCK reference (DIFT)


def ref_dift(pairs):
    total_pck, all_correct, all_total, cats = [], 0, 0, {}
    for cat, pred, gt, bbox in pairs:
        threshold = max(bbox[3] - bbox[1], bbox[2] - bbox[0])
        correct = total = 0
        for p, g in zip(pred, gt):
            total += 1
            all_total += 1
            dist = ((p[0] - g[0]) ** 2 + (p[1] - g[1]) ** 2) ** 0.5
            if dist / threshold <= 0.1:
                correct += 1
                all_correct += 1
        c = cats.setdefault(cat, [[], 0, 0])
        c[0].append(correct / total)
        c[1] += correct
        c[2] += total
        total_pck.append(correct / total)
    return np.mean(total_pck) * 100, all_correct / all_total * 100, {k: (np.mean(v[0]) * 100, v[1] / v[2] * 100)
                                                                      for k, v in cats.items()}


@pytest.mark.parametrize("seed", range(5))
def test_pck_matches_dift(seed):
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(20):
        n = int(rng.integers(1, 8))
        gt = rng.integers(0, 100, (n, 2))
        x1, y1 = rng.integers(0, 50, 2)
        bbox = [int(x1), int(y1), int(x1 + rng.integers(10, 50)), int(y1 + rng.integers(10, 50))]
        size = max(bbox[3] - bbox[1], bbox[2] - bbox[0])
        pred = gt + rng.integers(-size // 5, size // 5 + 1, (n, 2))
        if n > 1:   # exactly on the threshold: a 3-4-5 offset at 0.1 · size = 5 (size 50 only)
            pred[0] = gt[0] + (np.array([3, 4]) if size == 50 else 0)
        pairs.append((f"cat{rng.integers(0, 3)}", pred, gt, bbox))
    per_image, per_point, cats = ref_dift(pairs)
    correct = [pck_correct(p, g, max(b[3] - b[1], b[2] - b[0])) for _, p, g, b in pairs]
    s = pck_summary(correct, [c for c, *_ in pairs])
    assert abs(s["per_image"] - per_image) <= 1e-9 and abs(s["per_point"] - per_point) <= 1e-9
    for k, (pi, pp) in cats.items():
        assert abs(s["per_category"][k]["per_image"] - pi) <= 1e-9
        assert abs(s["per_category"][k]["per_point"] - pp) <= 1e-9
    assert abs(s["category_mean"] - np.mean([v[1] for v in cats.values()])) <= 1e-9


def test_pck_boundary_is_inclusive():
    assert pck_correct(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]]), 50)[0]          # 5/50 = 0.1
    assert not pck_correct(np.array([[3.0, 4.01]]), np.array([[0.0, 0.0]]), 50)[0]
