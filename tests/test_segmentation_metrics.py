"""Segmentation metrics against sklearn, a hand-worked confusion matrix and a transcription of mmseg 0.x's
intersect_and_union / total_area_to_metrics on random cases; ADE20K label handling."""
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

from bench.data.ade20k import reduce_zero_label
from bench.metrics.segmentation import confusion_matrix, segmentation_scores


def test_hand_worked_example_with_ignore_and_absent_class():
    # 4 classes; class 3 appears nowhere (NaN, excluded), one pixel ignored (255).
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    conf = confusion_matrix(pred, gt, num_classes=4).numpy()
    # Counted by hand: GT0→{0,1}, GT1→{1,2}, GT2→{2}; the ignored pixel (pred 0) is dropped.
    expected = np.zeros((5, 4), int)         # + the row of out-of-range labels (none here)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[1, 2] = expected[2, 2] = 1
    np.testing.assert_array_equal(conf, expected)
    s = segmentation_scores(conf)
    # IoU: c0 = 1/(2+1-1) = 1/2, c1 = 1/(2+2-1) = 1/3, c2 = 1/(1+2-1) = 1/2, c3 = 0/0 → NaN.
    assert math.isnan(s["per_class_iou"][3])
    assert s["mIoU"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert s["mAcc"] == pytest.approx(100 * (1 / 2 + 1 / 2 + 1) / 3)
    assert s["aAcc"] == pytest.approx(100 * 3 / 5)


def test_predicted_only_class_counts_as_zero_iou():
    # A class never in the GT but predicted has union > 0 and IoU 0 (kept in the mean, as mmseg).
    gt, pred = np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1])
    s = segmentation_scores(confusion_matrix(pred, gt, num_classes=3))
    assert s["per_class_iou"][1] == 0 and math.isnan(s["per_class_iou"][2])
    assert s["mIoU"] == pytest.approx(100 * (3 / 4 + 0) / 2)
    assert math.isnan(s["per_class_acc"][1])    # no GT pixels: accuracy undefined, left out of mAcc
    assert s["mAcc"] == pytest.approx(75.0)


def test_agrees_with_sklearn_accumulated_over_images():
    rng = np.random.default_rng(0)
    c = 6
    gts = [rng.integers(0, c - 1, size=(5, 7)) for _ in range(4)]     # class 5 absent from GT
    preds = [rng.integers(0, c - 2, size=(5, 7)) for _ in range(4)]   # classes 4, 5 never predicted
    for g in gts:
        g[rng.random(g.shape) < 0.2] = 255
    conf = sum(confusion_matrix(p, g, c) for p, g in zip(preds, gts)).numpy()
    g_all = np.concatenate([g.ravel() for g in gts])
    p_all = np.concatenate([p.ravel() for p in preds])
    keep = g_all != 255
    np.testing.assert_array_equal(conf[:c], sk_confusion(g_all[keep], p_all[keep], labels=list(range(c))))
    assert not conf[c].any()
    present = sorted(set(g_all[keep]) | set(p_all[keep]))
    sk_iou = jaccard_score(g_all[keep], p_all[keep], labels=present, average=None, zero_division=0)
    s = segmentation_scores(conf)
    assert s["mIoU"] == pytest.approx(100 * sk_iou.mean())
    assert math.isnan(s["per_class_iou"][5])
    # Whole-set accumulation differs from averaging per-image mIoU.
    per_image = np.mean([segmentation_scores(confusion_matrix(p, g, c))["mIoU"] for p, g in zip(preds, gts)])
    assert s["mIoU"] != pytest.approx(per_image)


# ---- transcription of open-mmlab/mmsegmentation 0.x mmseg/core/evaluation/metrics.py -------------------------
def mmseg_intersect_and_union(pred_label, label, num_classes, ignore_index):
    pred_label = torch.from_numpy(pred_label)
    label = torch.from_numpy(label)
    mask = (label != ignore_index)
    pred_label = pred_label[mask]
    label = label[mask]
    intersect = pred_label[pred_label == label]
    area_intersect = torch.histc(intersect.float(), bins=(num_classes), min=0, max=num_classes - 1)
    area_pred_label = torch.histc(pred_label.float(), bins=(num_classes), min=0, max=num_classes - 1)
    area_label = torch.histc(label.float(), bins=(num_classes), min=0, max=num_classes - 1)
    area_union = area_pred_label + area_label - area_intersect
    return area_intersect, area_union, area_pred_label, area_label


def mmseg_eval_metrics(results, gt_seg_maps, num_classes, ignore_index):
    """total_intersect_and_union + total_area_to_metrics(['mIoU'], nan_to_num=None), then the nanmean the
    evaluation hook prints (mIoU, mAcc) and aAcc, in percent."""
    total = [torch.zeros((num_classes,), dtype=torch.float64) for _ in range(4)]
    for result, gt in zip(results, gt_seg_maps):
        for i, area in enumerate(mmseg_intersect_and_union(result, gt, num_classes, ignore_index)):
            total[i] += area
    total_area_intersect, total_area_union, _, total_area_label = total
    all_acc = total_area_intersect.sum() / total_area_label.sum()
    iou = total_area_intersect / total_area_union
    acc = total_area_intersect / total_area_label
    return {"aAcc": float(all_acc) * 100, "mIoU": float(np.nanmean(iou.numpy())) * 100,
            "mAcc": float(np.nanmean(acc.numpy())) * 100, "IoU": iou.numpy() * 100}
# ------------------------------------------------------------------------------------------------------------------


def test_label_outside_the_classes_is_dropped_as_mmseg_does():
    # C = 3; ground truth 0, 7, 1, 255 against predictions 0, 1, 1, 2. mmseg drops the 255 pixel; histc drops the
    # label 7 from the label and intersection areas, but its prediction (1) still counts for class 1:
    # intersection [1, 1, 0], prediction [1, 2, 0], label [1, 1, 0] → union [1, 2, 0], IoU [1, 1/2, NaN]:
    # mIoU 75, mAcc (1 + 1)/2 = 100, aAcc 2/2 = 100.
    gt, pred = np.array([0, 7, 1, 255]), np.array([0, 1, 1, 2])
    conf = confusion_matrix(pred, gt, num_classes=3)
    assert conf.shape == (4, 3) and conf[3].tolist() == [0, 1, 0]
    s = segmentation_scores(conf)
    assert s["mIoU"] == pytest.approx(75.0) and s["mAcc"] == pytest.approx(100.0) and s["aAcc"] == 100.0
    assert math.isnan(s["per_class_iou"][2]) and s["pixels_label_out_of_range"] == 1
    ref = mmseg_eval_metrics([pred], [gt], 3, 255)
    assert (ref["mIoU"], ref["mAcc"], ref["aAcc"]) == pytest.approx((75.0, 100.0, 100.0))


@pytest.mark.parametrize("bad", [3, -1])
def test_prediction_outside_the_classes_is_an_error(bad):
    # bincount(target·C + pred) would alias a prediction of C into the next row's class 0
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, bad]), np.array([0, 1]), num_classes=3)


def test_randomized_against_mmseg_transcription():
    """240 random evaluation sets (1-4 images each): ignored pixels, labels ≥ C, classes absent from the ground
    truth or never predicted, constant maps; mIoU, mAcc, aAcc and per-class IoU equal mmseg's to 1e-9."""
    rng = np.random.default_rng(1607)
    out_of_range = 0
    for case in range(240):
        c = int(rng.integers(2, 9))          # C = 1: histc(min=0, max=0) falls back to the data range
        preds, gts = [], []
        conf = torch.zeros(c + 1, c, dtype=torch.int64)
        for _ in range(int(rng.integers(1, 5))):
            shape = tuple(int(v) for v in rng.integers(1, 12, size=2))
            gt = rng.integers(0, c + 2, size=shape).astype(np.uint8)        # c, c+1: out of range
            gt[rng.random(shape) < 0.15] = 255
            if rng.random() < 0.3:
                gt[:] = rng.integers(0, c)                                     # a constant map
            pred = rng.integers(0, max(1, c - int(rng.integers(0, 2))), size=shape).astype(np.int64)
            preds.append(pred)
            gts.append(gt)
            conf += confusion_matrix(pred, gt, c)
        if all((g == 255).all() for g in gts):
            continue
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)         # nanmean of an all-NaN slice
            ref = mmseg_eval_metrics(preds, [g.astype(np.int64) for g in gts], c, 255)
        ours = segmentation_scores(conf)
        for key in ("mIoU", "mAcc", "aAcc"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-9, nan_ok=True), (case, key)
        np.testing.assert_allclose(ours["per_class_iou"], ref["IoU"], atol=1e-9)
        out_of_range += ours["pixels_label_out_of_range"] > 0
    assert out_of_range > 100


def test_reduce_zero_label_matches_mmseg():
    raw = np.array([0, 1, 2, 150, 255], dtype=np.uint8)
    # mmseg: gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255 (on uint8)
    ref = raw.copy()
    ref[ref == 0] = 255
    ref = ref - 1
    ref[ref == 254] = 255
    np.testing.assert_array_equal(reduce_zero_label(raw), ref.astype(np.int64))
