"""VOC07 11-point mAP (both definitions: the devkit's and ssl-transfer's) and mean per-class accuracy against
hand-worked values, transcriptions of the devkit and of ssl-transfer's voc_eval_cls, and scikit-learn."""
import numpy as np
import pytest

from bench.metrics.transfer import ssl_transfer_voc07_ap, transfer_metric, voc07_11point_ap, voc07_mean_ap
from tests.test_detection_metrics import D2_GRID, DEVKIT_GRID


def devkit_voc07_cls_ap(out, gt):
    """Transcription of VOCdevkit 2007 VOCevalcls.m + VOCap (VOC2007 branch), written loop by loop:
        [so,si]=sort(-out); tp=gt(si)>0; fp=gt(si)<0; fp=cumsum(fp); tp=cumsum(tp);
        rec=tp/sum(gt>0); prec=tp./(fp+tp);
        ap=0; for t=0:0.1:1, p=max(prec(rec>=t)); if isempty(p), p=0; end; ap=ap+p/11; end
    MATLAB's max ignores the NaN of 0/0 (a difficult image ranked first); t runs over MATLAB's 0:0.1:1."""
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
    for t in DEVKIT_GRID:
        ps = [p for r, p in zip(rec, prec) if r >= t and not np.isnan(p)]
        ap += (max(ps) if ps else 0.0) / 11
    return ap


def ssl_transfer_voc_eval_cls(y_true, y_pred):
    """Transcription of linusericsson/ssl-transfer:linear.py voc_eval_cls(y_true, y_pred) with y_true the
    `target == 1` of its datasets/voc2007.py, and sklearn's precision_recall_curve written out (as
    sklearn.metrics._ranking._binary_clf_curve): scores sorted descending, one point per distinct score (the last
    index of each run of ties), tps = positives up to there, fps = the rest; precision = tps / (tps + fps),
    recall = tps / tps[-1], reversed, then (precision 1, recall 0) appended. voc_ap: t over np.linspace(0, 1, 11)."""
    order = sorted(range(len(y_pred)), key=lambda i: -y_pred[i])
    prec, rec = [], []
    tps = fps = 0
    for pos, i in enumerate(order):
        tps += y_true[i]
        fps += 1 - y_true[i]
        if pos == len(order) - 1 or y_pred[order[pos + 1]] != y_pred[i]:
            prec.append(tps / (tps + fps))
            rec.append(tps)
    rec = [r / tps for r in rec]
    prec, rec = np.array(prec[::-1] + [1.0]), np.array(rec[::-1] + [0.0])
    ap = 0.0
    for t in np.linspace(0, 1, 11):
        if np.sum(rec >= t) == 0:
            p = 0
        else:
            p = np.max(prec[rec >= t])
        ap += p / 11.0
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


def test_recall_of_exactly_point_six_counts_on_the_devkit_grid():
    # 5 positives ranked 1, 2, 3, 5, 6 (a negative at 4): recall .2 .4 .6 .6 .8 1, precision 1 1 1 3/4 4/5 5/6.
    # devkit 0:0.1:1 (0.6 exact): 7 points at 1, 4 at 5/6 → 0.9394; np.linspace's 0.6000000000000001 is not
    # reached by recall 3/5: 6 points at 1, 5 at 5/6 → 0.9242.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 1, -1, 1, 1])
    assert voc07_11point_ap(scores, labels) == pytest.approx((7 + 4 * 5 / 6) / 11, abs=1e-12)
    assert voc07_11point_ap(scores, labels, grid="numpy") == pytest.approx((6 + 5 * 5 / 6) / 11, abs=1e-12)
    assert devkit_voc07_cls_ap(scores, labels) == pytest.approx((7 + 4 * 5 / 6) / 11, abs=1e-12)


def test_ssl_transfer_definition_hand_worked():
    # scores .9 .8 .8 .7 .6, labels P 0 P N P (0 = difficult). ssl-transfer: the difficult image is a negative and
    # the two .8 form one threshold: points (tp, fp) = (1, 0), (2, 1), (2, 2), (3, 2) → recall 1/3 2/3 2/3 1,
    # precision 1 2/3 1/2 3/5, plus (recall 0, precision 1). 11-point on linspace: t ≤ .3 → 1 (4 points);
    # .4 … .6 → 2/3 (the first of those thresholds is 0.4; 2/3 reaches .6000000000000001 too) → 3 points;
    # .7 … 1 → 3/5 (4 points). The devkit ignores the difficult image: P P N P (stable order), recall 1/3 2/3 2/3 1,
    # precision 1 1 2/3 3/4: 7 points at 1 (t ≤ .6), 4 at 3/4.
    scores = np.array([0.9, 0.8, 0.8, 0.7, 0.6])
    labels = np.array([1, 0, 1, -1, 1])
    ssl = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert ssl_transfer_voc07_ap(scores, labels) == pytest.approx(ssl, abs=1e-12)
    assert ssl_transfer_voc_eval_cls((labels == 1).astype(int).tolist(), scores.tolist()) == pytest.approx(ssl)
    devkit = (7 * 1 + 4 * 3 / 4) / 11
    assert voc07_11point_ap(scores, labels) == pytest.approx(devkit, abs=1e-12)
    mean, per_class = voc07_mean_ap(np.c_[scores, scores], np.c_[labels, labels], "ssl-transfer", "numpy")
    assert mean == pytest.approx(100 * ssl) and per_class == pytest.approx([100 * ssl] * 2)
    assert transfer_metric("mAP_11pt", scores[:, None], labels[:, None], voc07_definition="ssl-transfer",
                           grid="numpy") == pytest.approx(100 * ssl)


def _random_voc_column(rng):
    n = int(rng.integers(2, 60))
    labels = rng.choice([1, -1, -1, 0], size=n)
    labels[rng.integers(n)] = 1
    step = rng.choice([0.5, 0.25, 1e-3])            # coarse steps: many tied scores
    scores = np.round((rng.normal(size=n) + rng.uniform(0, 1.5) * (labels > 0)) / step) * step
    return scores, labels


def test_randomized_devkit_definition_against_transcription():
    """300 random columns with ties, difficult images and few positives (recalls of exactly .3/.6/.7 happen)."""
    rng = np.random.default_rng(1601)
    grid_matters = 0
    for case in range(300):
        scores, labels = _random_voc_column(rng)
        assert voc07_11point_ap(scores, labels) == pytest.approx(devkit_voc07_cls_ap(scores, labels), abs=1e-9), case
        grid_matters += abs(voc07_11point_ap(scores, labels) - voc07_11point_ap(scores, labels, grid="numpy")) > 1e-9
    assert grid_matters > 10


def test_randomized_ssl_transfer_definition_against_transcription():
    rng = np.random.default_rng(1602)
    differs = 0
    for case in range(300):
        scores, labels = _random_voc_column(rng)
        ref = ssl_transfer_voc_eval_cls((labels == 1).astype(int).tolist(), scores.tolist())
        assert ssl_transfer_voc07_ap(scores, labels) == pytest.approx(ref, abs=1e-9), case
        differs += abs(ref - voc07_11point_ap(scores, labels)) > 1e-9
    assert differs > 150          # the two definitions are not the same number


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
        ref = sum((prec[rec >= t].max() if (rec >= t).any() else 0) / 11 for t in D2_GRID)
        assert voc07_11point_ap(scores[:, c], labels[:, c], grid="numpy") == pytest.approx(ref, abs=1e-9)
        assert ssl_transfer_voc07_ap(scores[:, c], labels[:, c]) == pytest.approx(ref, abs=1e-9)
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
