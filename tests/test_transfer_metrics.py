"""VOC07 11-point mAP and mean per-class accuracy against hand-worked values, a transcription of the devkit,
and scikit-learn."""
import numpy as np
import pytest

from bench.metrics.transfer import transfer_metric, voc07_11point_ap, voc07_mean_ap


def devkit_voc07_cls_ap(out, gt):
    """Transcription of VOCdevkit 2007 VOCevalcls.m + VOCap (VOC2007 branch), written loop by loop:
        [so,si]=sort(-out); tp=gt(si)>0; fp=gt(si)<0; fp=cumsum(fp); tp=cumsum(tp);
        rec=tp/sum(gt>0); prec=tp./(fp+tp);
        ap=0; for t=0:0.1:1, p=max(prec(rec>=t)); if isempty(p), p=0; end; ap=ap+p/11; end
    MATLAB's max ignores the NaN of 0/0 (a difficult image ranked first)."""
    si = sorted(range(len(out)), key=lambda i: -out[i])           # Python's sort is stable, like MATLAB's
    tp = fp = 0
    rec, prec = [], []
    npos = sum(1 for g in gt if g > 0)
    for i in si:
        tp += gt[i] > 0
        fp += gt[i] < 0
        rec.append(tp / npos)
        prec.append(tp / (tp + fp) if tp + fp else float("nan"))
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ps = [p for r, p in zip(rec, prec) if r >= t and not np.isnan(p)]
        ap += (max(ps) if ps else 0.0) / 11
    return ap


def test_11point_ap_hand_worked():
    # ranking P N P N P: recall 1/3 1/3 2/3 2/3 1, precision 1 1/2 2/3 1/2 3/5
    # t ∈ {0,.1,.2,.3}: 1 (4 points); t ∈ {.4,.5,.6}: 2/3 (3 points); t ∈ {.7,.8,.9,1}: 3/5 (4 points)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, -1, 1, -1, 1])
    expected = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert voc07_11point_ap(scores, labels) == pytest.approx(expected, abs=1e-12)
    # a difficult image (label 0) is ignored wherever it ranks
    assert voc07_11point_ap(np.r_[1.0, scores], np.r_[0, labels]) == pytest.approx(expected, abs=1e-12)
    assert voc07_11point_ap(np.r_[0.75, scores], np.r_[0, labels]) == pytest.approx(expected, abs=1e-12)
    # a negative on top lowers every interpolated precision: N P N P N P
    worse = voc07_11point_ap(np.r_[1.0, scores], np.r_[-1, labels])
    assert worse < expected


@pytest.mark.parametrize("seed", range(6))
def test_11point_ap_matches_devkit_transcription(seed):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.choice([1, -1, -1, 0], size=n)
    labels[0] = 1
    scores = np.round(rng.normal(size=n) + 0.8 * (labels > 0), 1)   # rounded: ties must break the devkit's way
    assert voc07_11point_ap(scores, labels) == pytest.approx(devkit_voc07_cls_ap(scores, labels), abs=1e-12)


def test_mean_ap_per_class_against_sklearn_precision_recall_curve():
    """ssl-transfer's voc_ap over sklearn's precision_recall_curve equals the devkit when scores are distinct,
    there are no difficult images and each class's top-ranked image is a positive (sklearn's curve adds a
    precision-1 point at recall 0, which the devkit lacks)."""
    from sklearn.metrics import precision_recall_curve
    rng = np.random.default_rng(7)
    n, k = 80, 5
    y = rng.integers(0, 2, size=(n, k))
    scores = rng.normal(size=(n, k)) + 1.2 * y
    for c in range(k):
        top = scores[:, c].argmax()
        y[top, c] = 1
    labels = np.where(y > 0, 1, -1)
    mean, per_class = voc07_mean_ap(scores, labels)
    for c in range(k):
        prec, rec, _ = precision_recall_curve(y[:, c], scores[:, c])
        ref = sum((prec[rec >= t].max() if (rec >= t).any() else 0) / 11 for t in np.linspace(0, 1, 11))
        assert per_class[c] == pytest.approx(100 * ref, abs=1e-9)
    assert mean == pytest.approx(np.mean(per_class))


def test_mean_ap_agrees_with_sklearn_average_precision_when_ranking_is_perfect_per_column():
    """Column c's scores rank column c's positives first but not other columns': a transposed or mixed-up column
    gives < 100, so this checks the per-class plumbing against sklearn's (non-interpolated) AP = 100."""
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=(40, 4))
    y[0] = 1
    y[1] = 0
    scores = y + rng.uniform(0, 0.5, size=y.shape)
    labels = np.where(y > 0, 1, -1)
    mean, per_class = voc07_mean_ap(scores, labels)
    skl = [100 * average_precision_score(y[:, c], scores[:, c]) for c in range(4)]
    assert per_class == pytest.approx(skl) and mean == pytest.approx(100.0)
    shuffled = voc07_mean_ap(scores[:, ::-1], labels)[0]
    assert shuffled < 90


def test_mean_per_class_accuracy_hand_worked_and_sklearn():
    from sklearn.metrics import balanced_accuracy_score
    # class 0: 3/4 right, class 1: 1/1, class 2: 0/2 → (75 + 100 + 0) / 3; top-1 would be 4/7
    labels = np.array([0, 0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0, 1])
    scores = np.eye(3)[pred]
    assert transfer_metric("mean_per_class_acc", scores, labels) == pytest.approx(175 / 3)
    assert transfer_metric("top1", scores, labels) == pytest.approx(400 / 7)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=300)
    scores = rng.normal(size=(300, 6)) + 1.5 * np.eye(6)[labels]
    assert transfer_metric("mean_per_class_acc", scores, labels) == pytest.approx(
        100 * balanced_accuracy_score(labels, scores.argmax(1)))
