"""svm protocol: C selection and score equal scikit-learn's own grid search on the same hold-out; the miniature
CIFAR-10 run (python pickles through the safe reader) puts a row in svm__cifar10 and InstDisc's k-NN preset one
in knn__cifar10."""
import json

import numpy as np
import pytest

from bench.protocols._common import holdout_split
from bench.protocols.svm import svm_select_and_score
from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_selection_and_score_match_sklearn_grid_search():
    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.svm import LinearSVC
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1.0, (4, 8))
    y = rng.integers(0, 4, 300)
    x = centres[y] + rng.normal(0, 1.2, (300, 8))
    xtr, ytr, xte, yte = x[:200], y[:200], x[200:], y[200:]
    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    res = svm_select_and_score(xtr, ytr, xte, yte, c_grid=grid, holdout_fraction=0.25, holdout_seed=3)
    xn_tr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    xn_te = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    fold = np.full(200, -1)
    fold[holdout_split(200, 0.25, 3)[1]] = 0          # the held-out rows are the one validation fold
    search = GridSearchCV(LinearSVC(dual="auto", max_iter=5000, random_state=0), {"C": list(grid)},
                          cv=PredefinedSplit(fold), scoring="accuracy", refit=True).fit(xn_tr, ytr)
    assert res["C"] == search.best_params_["C"]      # both keep the first (smallest) C among ties
    assert res["top1"] == pytest.approx(100 * search.score(xn_te, yte))
    held = search.cv_results_["mean_test_score"]
    assert [res["holdout_top1"][f"{c:g}"] for c in grid] == pytest.approx(list(100 * held))


def test_miniature_cifar10_svm_and_instdisc_knn_reach_their_tables(mini_root, tmp_path):
    out = tmp_path / "res"
    common = ("--model", "resnet18", "--dataset", "cifar10", "--data-root", mini_root, "--out", out,
              "--resolution", 32)
    assert run_cli("run", "--protocol", "svm", "--quick", *common) == 0
    assert run_cli("run", "--protocol", "knn", "--preset", "instdisc_cifar10", *common) == 0
    recs = {r["protocol"]: r for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))}
    assert recs["svm"]["dataset"]["counts"] == recs["knn"]["dataset"]["counts"]
    assert recs["svm"]["details"]["C"] in (1e-3, 1e-1, 10.0)       # --quick: every other C of the grid
    assert run_cli("table", "--results", out, "--no-plots") == 0
    for protocol in ("svm", "knn"):
        table = (out / f"{protocol}__cifar10.md").read_text()
        assert "instdisc_cifar10_svm_knn" in table and "training objective: NCE m = 4096" in table
        row = next(line for line in table.splitlines() if line.startswith("| measured"))
        assert f"{recs[protocol]['metrics']['top1']:.2f}" in row and "not compared: miniature data" in row
