"""Segmentation metrics against sklearn and a hand-worked confusion matrix; ADE20K label handling."""
import math

import numpy as np
import pytest
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
    expected = np.zeros((4, 4), int)
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
    np.testing.assert_array_equal(conf, sk_confusion(g_all[keep], p_all[keep], labels=list(range(c))))
    present = sorted(set(g_all[keep]) | set(p_all[keep]))
    sk_iou = jaccard_score(g_all[keep], p_all[keep], labels=present, average=None, zero_division=0)
    s = segmentation_scores(conf)
    assert s["mIoU"] == pytest.approx(100 * sk_iou.mean())
    assert math.isnan(s["per_class_iou"][5])
    # Whole-set accumulation differs from averaging per-image mIoU.
    per_image = np.mean([segmentation_scores(confusion_matrix(p, g, c))["mIoU"] for p, g in zip(preds, gts)])
    assert s["mIoU"] != pytest.approx(per_image)


def test_out_of_range_label_is_an_error():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0]), np.array([7]), num_classes=3)


def test_reduce_zero_label_matches_mmseg():
    raw = np.array([0, 1, 2, 150, 255], dtype=np.uint8)
    # mmseg: gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255 (on uint8)
    ref = raw.copy()
    ref[ref == 0] = 255
    ref = ref - 1
    ref[ref == 254] = 255
    np.testing.assert_array_equal(reduce_zero_label(raw), ref.astype(np.int64))
