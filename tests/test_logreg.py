"""L-BFGS logistic regression against scikit-learn's LogisticRegression at the same C, and the protocol's splits."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bench.protocols._common import holdout_split
from bench.protocols.logreg import c_grid, fit_logreg, fit_logreg_ovr, predict_scores, select_C

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest: tiny problems, loaded CI machine


def _problem(n, dim=16, classes=6, seed=0, noise=2.0):
    centers = np.random.default_rng(42).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    return (centers[y] + noise * rng.normal(size=(n, dim))).astype(np.float32), y


@pytest.mark.parametrize("C", [1e-3, 1e-1, 10.0])
def test_multinomial_matches_sklearn(C):
    x, y = _problem(500)
    xt, yt = _problem(400, seed=1)
    ours = fit_logreg(x, y, C, num_classes=6)
    sk = LogisticRegression(C=C, max_iter=10_000, tol=1e-10).fit(x.astype(np.float64), y)
    acc_ours = float((predict_scores(ours, xt).argmax(1).numpy() == yt).mean() * 100)
    acc_sk = float((sk.predict(xt) == yt).mean() * 100)
    assert abs(acc_ours - acc_sk) <= 0.3
    # same minimiser, not just the same accuracy: sklearn's C·ΣCE + ½‖W‖², bias unpenalised
    np.testing.assert_allclose(ours.W.numpy(), sk.coef_.T, atol=1e-4 * max(1.0, np.abs(sk.coef_).max()))
    np.testing.assert_allclose(ours.b.numpy(), sk.intercept_, atol=1e-3)
    assert 30 < acc_sk < 100


def test_one_vs_rest_matches_sklearn_binary_with_mask():
    x, _ = _problem(300)
    rng = np.random.default_rng(3)
    Y = (x[:, :3] + rng.normal(size=(300, 3)) > 0).astype(np.float64)
    mask = rng.random((300, 3)) > 0.1   # e.g. VOC "difficult" entries left out of a class's loss
    w = fit_logreg_ovr(x, Y, 0.05, mask=mask)
    scores = predict_scores(w, x).numpy()
    for k in range(3):
        keep = mask[:, k]
        sk = LogisticRegression(C=0.05, max_iter=10_000, tol=1e-10).fit(x[keep].astype(np.float64), Y[keep, k])
        np.testing.assert_allclose(w.W[:, k].numpy(), sk.coef_[0], atol=1e-4)
        np.testing.assert_allclose(scores[:, k], sk.decision_function(x), atol=1e-3)


def test_select_C_warm_start_equals_cold_and_sklearn_choice():
    x, y = _problem(400)
    tr, ho = holdout_split(len(x), 0.25, seed=0)
    grid = c_grid(-4, 2, 7)
    best, curve = select_C(x[tr], y[tr], x[ho], y[ho], grid, num_classes=6, progress=False)
    best_cold, curve_cold = select_C(x[tr], y[tr], x[ho], y[ho], grid, num_classes=6, warm_start=False,
                                     progress=False)
    sk_curve = {float(c): float((LogisticRegression(C=c, max_iter=10_000, tol=1e-10).fit(
        x[tr].astype(np.float64), y[tr]).predict(x[ho]) == y[ho]).mean() * 100) for c in grid}
    assert best == best_cold
    for c in grid:
        assert abs(curve[float(c)] - sk_curve[float(c)]) <= 1.0   # ≤ one of 100 held-out rows flips
    assert max(curve.values()) - min(curve.values()) > 5          # C matters on this problem


def test_path_prediction_is_the_polynomial_in_log_C_and_keeps_infinite_biases():
    """Hand-worked: weights that are a quadratic in log C along the path are predicted exactly at the next C; with
    two fits the prediction is the line through them; a class with bias −∞ (no training rows) keeps it."""
    from bench.protocols.logreg import LogRegWeights, _path_starts
    u = np.log(np.array([1e-3, 1e-2, 1e-1, 1.0]))
    W_of = [torch.tensor([[1 + 2 * v - 0.5 * v * v, -v]], dtype=torch.float64) for v in u]
    path = [LogRegWeights(W, torch.tensor([float(v), -torch.inf], dtype=torch.float64), c)
            for W, v, c in zip(W_of, u, [1e-3, 1e-2, 1e-1])]
    last, pred = _path_starts(path, 1.0)
    assert last is path[-1]
    torch.testing.assert_close(pred.W, W_of[3], rtol=0, atol=1e-12)
    assert pred.b[0].item() == pytest.approx(u[3]) and pred.b[1].item() == -np.inf
    _, line = _path_starts(path[:2], 1e-1)                                # 2 fits: linear
    torch.testing.assert_close(line.W, 2 * path[1].W - path[0].W, rtol=0, atol=1e-12)
    assert _path_starts(path[:1], 1e-2) == [path[0]] and _path_starts([], 1.0) is None


def test_path_prediction_saves_iterations_and_changes_no_score(monkeypatch):
    """Starting each C from the extrapolated path instead of the last solution alone: the same minimisers (every
    hold-out score and the chosen C unchanged) in fewer L-BFGS iterations (iteration counts, not time)."""
    from bench.protocols import logreg
    x, y = _problem(2000, dim=128, classes=16, noise=4.0)       # ~1,000 iterations along the path
    tr, ho = holdout_split(len(x), 0.25, seed=0)
    iters = []
    fit = logreg.fit_logreg

    def counting(*a, **k):
        w = fit(*a, **k)
        iters.append(w.n_iter)
        return w
    grid = c_grid(-4, 1, 21)
    best, curve = select_C(x[tr], y[tr], x[ho], y[ho], grid, num_classes=16, fit_fn=counting, progress=False)
    predicted = sum(iters)
    iters.clear()
    monkeypatch.setattr(logreg, "_path_starts", lambda path, C: [path[-1]] if path else None)
    best_warm, curve_warm = select_C(x[tr], y[tr], x[ho], y[ho], grid, num_classes=16, fit_fn=counting,
                                     progress=False)
    assert (best, curve) == (best_warm, curve_warm)
    assert predicted < 0.8 * sum(iters), (predicted, sum(iters))


def test_holdout_split_is_seeded_disjoint_and_complete():
    a_tr, a_ho = holdout_split(1000, 0.1, seed=0)
    b_tr, b_ho = holdout_split(1000, 0.1, seed=0)
    _, c_ho = holdout_split(1000, 0.1, seed=1)
    assert np.array_equal(a_ho, b_ho) and not np.array_equal(a_ho, c_ho)
    assert len(a_ho) == 100 and np.intersect1d(a_tr, a_ho).size == 0
    assert np.array_equal(np.union1d(a_tr, a_ho), np.arange(1000))


def test_protocol_with_test_split_selects_on_val_and_scores_test(tmp_path):
    from bench.cache import FeatureSet, save_feature_split
    from bench.runner import RunContext, run_protocol
    for split, seed, n in (("train", 0, 300), ("val", 1, 150), ("test", 2, 200)):
        x, y = _problem(n, seed=seed)
        save_feature_split(tmp_path / "feats", split, FeatureSet(x, y))
    ctx = RunContext(dataset="imagenet", features_dir=tmp_path / "feats", quick=True)
    rec, _, _ = run_protocol("logreg", ctx, out_dir=tmp_path / "out")
    d = rec["details"]
    assert d["evaluated_on"] == "test" and "refit on train+val" in d["selection"]
    x, y = np.concatenate([_problem(300)[0], _problem(150, seed=1)[0]]), np.concatenate(
        [_problem(300)[1], _problem(150, seed=1)[1]])
    xt, yt = _problem(200, seed=2)
    sk = LogisticRegression(C=d["best_C"], max_iter=50, tol=1e-10).fit(x.astype(np.float64), y)
    probs = sk.predict_proba(xt)
    top5 = np.mean([yt[i] in np.argsort(-probs[i])[:5] for i in range(len(yt))]) * 100
    assert abs(rec["metrics"]["top1"] - (sk.predict(xt) == yt).mean() * 100) <= 1.0
    assert abs(rec["metrics"]["top5"] - top5) <= 1.0
    assert torch.isfinite(torch.tensor(rec["metrics"]["top1"]))


@pytest.mark.parametrize("C", [1e-6, 1e-2])
def test_extreme_C_converges_to_sklearns_minimiser(C):
    # In raw coordinates L-BFGS crawled: at small C the unpenalised bias has orders of magnitude less curvature
    # than the penalised W, at larger C the features' small-variance directions far less than the large ones.
    # Before preconditioning, C = 1e-2 here ran into max_iter = 1000 without converging (scikit-learn needs ~750).
    # The preconditioned fit must converge in few iterations to scikit-learn's minimiser.
    x, y = _problem(500, dim=32)
    x = x + 5.0                                   # uncentred features, as backbone features are
    ours = fit_logreg(x, y, C, num_classes=6)
    sk = LogisticRegression(C=C, max_iter=100_000, tol=1e-10).fit(x.astype(np.float64), y)
    assert ours.converged and ours.n_iter < 200
    scale = max(1.0, np.abs(sk.coef_).max())
    np.testing.assert_allclose(ours.W.numpy(), sk.coef_.T, atol=1e-4 * scale)
    # sklearn's intercept is defined up to a shift common to all classes (softmax); compare centred
    b, skb = ours.b.numpy(), sk.intercept_
    np.testing.assert_allclose(b - b.mean(), skb - skb.mean(), atol=1e-3 * max(1.0, np.abs(skb).max()))


def test_classes_without_rows_get_the_limit_and_the_rest_sklearns_fit():
    # class 2 has no training row: its bias has no finite minimiser (→ −∞, weights → 0); scikit-learn fits the
    # classes present (classes_ = unique(y)). bench must give the same weights for those and never predict 2.
    x, y = _problem(300)
    y = np.where(y == 2, 3, y)
    ours = fit_logreg(x, y, 0.1, num_classes=6)
    sk = LogisticRegression(C=0.1, max_iter=10_000, tol=1e-10).fit(x.astype(np.float64), y)
    assert list(sk.classes_) == [0, 1, 3, 4, 5] and ours.converged
    np.testing.assert_allclose(ours.W.numpy()[:, sk.classes_], sk.coef_.T, atol=1e-4)
    assert ours.b[2].item() == -np.inf and (ours.W[:, 2] == 0).all()
    pred = predict_scores(ours, x).argmax(1).numpy()
    assert (pred == sk.predict(x)).all() and (pred != 2).all()


def test_rows_reads_index_views_and_concatenations_like_numpy():
    from bench.protocols.logreg import Rows
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)).astype(np.float16), rng.normal(size=(30, 4)).astype(np.float16)
    idx = rng.permutation(50)[:37]
    want = np.concatenate([a[idx], b])
    for view in (Rows((a, idx), b), Rows((torch.as_tensor(a), idx), torch.as_tensor(b))):
        assert view.shape == want.shape
        for s, e in ((0, 67), (5, 36), (30, 45), (36, 37), (60, 100)):
            np.testing.assert_array_equal(np.asarray(view[s:e]), want[s:e])


def test_streamed_fp16_fit_over_a_row_view_is_sklearns_and_copies_nothing():
    # 1.28M × 1024 fp16 features must not be copied: the solver keeps x as given, reads it (here through a
    # hold-out index view) in row chunks converted to float64, and never rotates it. Same minimiser as
    # scikit-learn on the same values in float64.
    from bench.protocols.logreg import Rows, precondition
    x, y = _problem(600, dim=24)
    x16 = (x + 3.0).astype(np.float16)
    idx = np.sort(np.random.default_rng(1).permutation(600)[:450])
    view = Rows((x16, idx))
    pc = precondition(view, chunk=64)
    ours = fit_logreg(pc, y[idx], 0.05, num_classes=6)
    assert pc.x is view and not pc.rotated and pc._z is None and ours.converged
    sk = LogisticRegression(C=0.05, max_iter=10_000, tol=1e-10).fit(x16[idx].astype(np.float64), y[idx])
    np.testing.assert_allclose(ours.W.numpy(), sk.coef_.T, atol=1e-4 * max(1.0, np.abs(sk.coef_).max()))
    b, skb = ours.b.numpy(), sk.intercept_
    np.testing.assert_allclose(b - b.mean(), skb - skb.mean(), atol=1e-3)
    one_chunk = fit_logreg(x16[idx], y[idx], 0.05, num_classes=6)   # the single-chunk (rotated once) path
    np.testing.assert_allclose(ours.W.numpy(), one_chunk.W.numpy(), atol=1e-5 * max(1.0, np.abs(sk.coef_).max()))
    np.testing.assert_allclose(predict_scores(ours, view, chunk=100).numpy(),
                               sk.decision_function(x16[idx].astype(np.float64)) - skb + b, atol=1e-3)


@pytest.mark.parametrize("kind, chunk", [("softmax", 65536), ("softmax", 64), ("ovr", 65536), ("ovr", 64)])
def test_written_out_gradient_is_the_objectives_derivative(monkeypatch, kind, chunk):
    """The gradient handed to L-BFGS-B (softmax − one-hot, or masked σ − y, through the preconditioning; rotated
    single chunk or streamed row chunks) against central finite differences of the value it hands over."""
    import scipy.optimize
    seen = {}
    minimize = scipy.optimize.minimize

    def spy(fun, x0, **kw):
        seen["fun"], seen["n"] = fun, len(x0)
        return minimize(fun, x0, **kw)
    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    x, y = _problem(300)
    if kind == "softmax":
        fit_logreg(x, y, 0.3, num_classes=6, max_iter=2, chunk=chunk)
    else:
        Y = np.eye(6)[y][:, :4]
        mask = np.random.default_rng(1).random(Y.shape) > 0.2
        fit_logreg_ovr(x, Y, 0.3, mask=mask, max_iter=2, chunk=chunk)
    rng = np.random.default_rng(0)
    p = rng.normal(size=seen["n"]) * 0.3
    _, g = seen["fun"](p)
    for _ in range(3):
        v = rng.normal(size=len(p))
        h = 1e-5
        fd = (seen["fun"](p + h * v)[0] - seen["fun"](p - h * v)[0]) / (2 * h)
        assert fd == pytest.approx(float(g @ v), rel=1e-6, abs=1e-9)


def test_small_fits_run_on_one_thread_and_restore_the_setting(monkeypatch):
    """A second thread buys nothing on a small problem and, on a busy machine, spin-waits (the miniature's 45-C
    path: 13× slower); large fits keep torch's thread count, and the caller's setting is always restored."""
    import scipy.optimize

    from bench.protocols import logreg
    seen = []
    minimize = scipy.optimize.minimize

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return minimize(*args, **kwargs)
    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    torch.set_num_threads(2)          # the one_thread fixture restores the session's setting afterwards
    x, y = _problem(300)
    fit_logreg(x, y, 1.0, num_classes=6)
    assert seen == [1] and torch.get_num_threads() == 2
    monkeypatch.setattr(logreg, "_PARALLEL_WORK", 0)          # every fit counts as large
    fit_logreg(x, y, 1.0, num_classes=6)
    assert seen == [1, 2] and torch.get_num_threads() == 2
