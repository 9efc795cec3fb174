"""Bootstrap intervals, the paired comparison and their storage (bench.metrics.bootstrap, bench.comparison)."""
from __future__ import annotations

import base64
import io
import zlib

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from bench.comparison import compare_records, comparable_problem
from bench.errors import BenchError
from bench.metrics.bootstrap import (Samples, bootstrap_distribution, decode_samples, encode_samples, interval,
                                     mcnemar_midp, mean_samples, miou_samples, paired_distribution, statistic)
from bench.metrics.segmentation import segmentation_scores
from bench.uncertainty import combine_seed_samples, interval_text, uncertainty_block


def _covers(iv, truth):
    return iv["lo"] <= truth <= iv["hi"]


def test_interval_covers_a_known_accuracy_about_95_percent():
    # 400 draws of 400 items at a true accuracy of 70%: the 95% interval must cover 70 in ~95% of them. The
    # binomial spread of the coverage over 400 draws is ±1.1 points; an interval half as wide covers ~68%, one
    # twice as wide ~100%, so [0.92, 0.975] cannot be met by accident.
    rng = np.random.default_rng(1)
    hits = [_covers(interval(mean_samples(rng.random(400) < 0.7), resamples=2000, seed=i), 70.0) for i in range(400)]
    assert 0.92 <= np.mean(hits) <= 0.975


def test_interval_covers_a_known_mean_of_continuous_values():
    # per-query AP-like values: Beta(2, 3) has mean 0.4; 70 queries as in ROxford5k
    rng = np.random.default_rng(2)
    hits = [_covers(interval(mean_samples(rng.beta(2, 3, 70)), resamples=2000, seed=i), 40.0) for i in range(300)]
    assert 0.90 <= np.mean(hits) <= 0.975


def test_few_values_path_has_the_distribution_of_index_resampling():
    rng = np.random.default_rng(3)
    v = rng.random(2000) < 0.3
    fast = bootstrap_distribution(mean_samples(v), resamples=4000, seed=0)
    idx = rng.integers(0, len(v), size=(4000, len(v)))
    slow = v[idx].mean(1) * 100
    assert fast.mean() == pytest.approx(slow.mean(), abs=0.05)
    assert fast.std() == pytest.approx(slow.std(), rel=0.06)
    assert fast.std() == pytest.approx(100 * np.sqrt(v.mean() * (1 - v.mean()) / len(v)), rel=0.06)


def test_miou_statistic_matches_the_segmentation_metric():
    rng = np.random.default_rng(4)
    c, confs = 5, []
    for _ in range(12):   # per-image confusion matrices; class 4 never appears anywhere
        gt = rng.integers(0, 4, 300)
        pred = np.where(rng.random(300) < 0.6, gt, rng.integers(0, 4, 300))
        confs.append(np.bincount(gt * c + pred, minlength=c * c).reshape(c, c))
    inter = np.stack([np.diag(m) for m in confs])
    union = np.stack([m.sum(0) + m.sum(1) - np.diag(m) for m in confs])
    assert statistic(miou_samples(inter, union)) == pytest.approx(segmentation_scores(sum(confs))["mIoU"])
    iv = interval(miou_samples(inter, union), resamples=500)
    assert iv["lo"] < statistic(miou_samples(inter, union)) < iv["hi"]


def test_shuffled_labels_put_the_interval_away_from_the_true_accuracy():
    from bench.protocols.knn import knn_evaluate
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(10, 32)) * 4
    ytr, yte = rng.integers(0, 10, 2000), rng.integers(0, 10, 1000)
    xtr, xte = centres[ytr] + rng.normal(size=(2000, 32)), centres[yte] + rng.normal(size=(1000, 32))
    res, hits = knn_evaluate(xtr.astype(np.float32), ytr, xte.astype(np.float32), yte, ks=(20,), per_sample=True)
    true_top1 = res[20][0]
    assert true_top1 > 90 and np.mean(hits[20][0]) * 100 == pytest.approx(true_top1)
    res_s, hits_s = knn_evaluate(xtr.astype(np.float32), ytr, xte.astype(np.float32), rng.permutation(yte), ks=(20,),
                                 per_sample=True)
    iv = interval(mean_samples(hits_s[20][0]))
    assert not _covers(iv, true_top1) and _covers(iv, res_s[20][0]) and iv["hi"] < 20   # chance is 10%


def test_mcnemar_midp_against_the_binomial_test():
    a = np.array([1] * 30 + [0] * 10 + [1] * 50 + [0] * 10, bool)
    b = np.array([0] * 30 + [1] * 10 + [1] * 50 + [0] * 10, bool)
    p, n01, n10 = mcnemar_midp(a, b)
    assert (n10, n01) == (30, 10)
    exact = binomtest(10, 40, 0.5).pvalue
    from scipy.stats import binom
    assert p == pytest.approx(exact - binom.pmf(10, 40, 0.5))
    assert mcnemar_midp(a, a)[0] == 1.0


def _record(hits, *, run_id="r", mini=True, version=1, metric="top1"):
    s = mean_samples(hits)
    return {"run_id": run_id, "protocol": "knn", "preset": "dino", "preset_version": version, "quick": False,
            "overrides": {}, "headline": [metric], "metrics": {metric: statistic(s)},
            "dataset": {"name": "imagenet", "mini": mini, "counts": {"imagenet/val": len(hits)}},
            "checkpoint": {"name": run_id}, **uncertainty_block({metric: s}, {metric: statistic(s)}, protocol="knn")}


def test_compare_rejects_at_about_the_nominal_rate_and_on_a_real_difference():
    rng = np.random.default_rng(6)
    rejections = []
    for _ in range(300):   # two backbones with the same accuracy, errors independent
        a, b = rng.random(300) < 0.7, rng.random(300) < 0.7
        rejections.append(mcnemar_midp(a, b)[0] < 0.05)
    assert 0.02 <= np.mean(rejections) <= 0.09
    a, b = rng.random(1000) < 0.75, rng.random(1000) < 0.65
    c = compare_records(_record(a, run_id="A"), _record(b, run_id="B"), resamples=2000)
    assert c["significant"] and c["p_value"] < 1e-3 and c["interval"]["lo"] > 0
    assert c["difference"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert c["verdict"].startswith("A is better than B")
    same = compare_records(_record(a, run_id="A"), _record(a, run_id="A2"), resamples=500)
    assert not same["significant"] and same["verdict"].startswith("no significant difference")


def test_paired_bootstrap_p_rate_on_continuous_values():
    rng = np.random.default_rng(7)
    rejections = []
    for i in range(150):
        base = rng.beta(2, 3, 100)   # shared query difficulty, independent noise of the same size
        a, b = mean_samples(base + rng.normal(0, .05, 100)), mean_samples(base + rng.normal(0, .05, 100))
        d = paired_distribution(a, b, resamples=1000, seed=i)
        diff = statistic(a) - statistic(b)
        p = (np.sum(np.abs(d - diff) >= abs(diff)) + 1) / (len(d) + 1)
        rejections.append(p < 0.05)
    assert 0.01 <= np.mean(rejections) <= 0.11


def test_compare_refuses_records_that_are_not_comparable():
    h = np.ones(50, bool)
    assert "miniature" in comparable_problem(_record(h), _record(h, mini=False))
    assert "preset version" in comparable_problem(_record(h), _record(h, version=2))
    with pytest.raises(BenchError, match="not comparable: other miniature"):
        compare_records(_record(h), _record(h, mini=False))
    other = _record(np.ones(60, bool))
    with pytest.raises(BenchError, match="split sizes"):
        compare_records(_record(h), other)


def test_samples_round_trip_and_refuse_pickles():
    rng = np.random.default_rng(8)
    for s in (mean_samples(rng.random(1001) < .5), mean_samples(rng.random(33)),
              miou_samples(rng.integers(0, 9, (7, 4)), rng.integers(9, 20, (7, 4)))):
        back = decode_samples(encode_samples(s))
        assert back.kind == s.kind and statistic(back) == pytest.approx(statistic(s), rel=1e-6)
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    bad = {"kind": "mean", "arrays": {"values": {"encoding": "npy",
                                                 "data": base64.b64encode(zlib.compress(buf.getvalue())).decode()}}}
    with pytest.raises(ValueError):
        decode_samples(bad)


def test_uncertainty_block_refuses_statistics_that_do_not_give_the_metric():
    with pytest.raises(BenchError, match="a bug"):
        uncertainty_block({"top1": mean_samples(np.ones(10, bool))}, {"top1": 50.0}, protocol="knn")


def test_seed_mean_statistic_and_interval():
    rng = np.random.default_rng(9)
    per_seed = [{"top1": mean_samples(rng.random(500) < p),
                 "mIoU": miou_samples(rng.integers(0, 5, (500, 3)), rng.integers(5, 9, (500, 3)))} for p in (.6, .7)]
    combined = combine_seed_samples(per_seed)
    assert statistic(combined["top1"]) == pytest.approx(np.mean([statistic(d["top1"]) for d in per_seed]))
    assert combined["mIoU"].kind == "seedmean"
    assert statistic(combined["mIoU"]) == pytest.approx(np.mean([statistic(d["mIoU"]) for d in per_seed]))
    back = decode_samples(encode_samples(combined["mIoU"]))
    assert statistic(back) == pytest.approx(statistic(combined["mIoU"]), rel=1e-6)


def test_interval_text():
    assert interval_text(76.1, (75.8, 76.4)) == "76.10 ± 0.30"
    assert interval_text(76.1, (75.0, 76.4)) == "76.10 [75.00, 76.40]"
    assert interval_text(76.1, None) == "76.10"


def test_topk_hits_mean_is_accuracy_topk():
    from bench.metrics.classification import accuracy_topk
    from bench.protocols._common import topk_hits
    scores, y = torch.randn(300, 12), torch.randint(0, 12, (300,))
    scores[:20] = 0.0   # ties everywhere in 20 rows
    acc, hits = accuracy_topk(scores, y), topk_hits(scores, y)
    assert hits[1].mean() * 100 == pytest.approx(acc[1]) and hits[5].mean() * 100 == pytest.approx(acc[5])


def test_voc_ap_statistic_matches_the_detection_metric_and_resamples():
    from bench.metrics.detection import ClassDetections, ClassGroundTruth, voc_ap_samples, voc_detection_metrics
    rng = np.random.default_rng(10)
    images = [f"im{i}" for i in range(40)]
    gts, dets = {}, {}
    for c, name in enumerate(("cat", "dog", "bus")):
        gt = ClassGroundTruth()
        ids, scores, boxes = [], [], []
        for img in images:
            m = int(rng.integers(0, 3)) if name != "bus" else 0      # bus: no box anywhere (left out of the mean)
            b = rng.uniform(0, 50, (m, 2))
            gt.boxes[img] = np.hstack([b, b + rng.uniform(10, 40, (m, 2))])
            gt.difficult[img] = rng.random(m) < 0.15
            for box in gt.boxes[img]:   # a near hit or a jittered miss, plus a random false positive
                ids.append(img)
                scores.append(round(float(rng.random()), 3))
                boxes.append(box + rng.normal(0, 3 if rng.random() < 0.7 else 15, 4))
            ids.append(img)
            scores.append(round(float(rng.random()), 3))
            boxes.append(np.r_[rng.uniform(0, 50, 2), rng.uniform(60, 90, 2)])
        gts[name], dets[name] = gt, ClassDetections(np.array(ids, dtype=object), np.array(scores), np.array(boxes))
    metrics, _ = voc_detection_metrics(dets, gts)
    s = voc_ap_samples(dets, gts)
    assert statistic(s) == pytest.approx(metrics["AP50"], abs=1e-9)
    back = decode_samples(encode_samples(s))
    assert statistic(back) == pytest.approx(metrics["AP50"], abs=1e-6)
    # a resampled set with each image once more is the same set twice: the same AP
    w = np.full((1, s.n), 2.0)
    from bench.metrics.bootstrap import STATISTICS
    assert STATISTICS["vocap"](s.arrays, w)[0] * 100 == pytest.approx(metrics["AP50"], abs=1e-9)
    iv = interval(s, resamples=300)
    assert iv["lo"] < metrics["AP50"] < iv["hi"] and iv["n"] == 40
