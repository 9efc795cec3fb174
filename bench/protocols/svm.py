"""Linear SVM on frozen features (InstDisc's CIFAR-10 "Linear SVM" column, Wu et al. 2018 Table 1).

scikit-learn's `LinearSVC` (liblinear: one-vs-rest, L2-regularised squared hinge; liblinear regularises the
intercept as the weight of a constant feature, LinearSVC's own behaviour) on cached features, L2-normalised
first when the preset says so (InstDisc's features are L2-normalised). C is chosen on a seeded hold-out of the
TRAIN split (`holdout_fraction`, `holdout_seed`: the same split as logreg's `holdout_split`), the winner is
refit on all of train and scored once on the eval split; ties go to the smaller C. The paper prints no C and
releases no SVM code (zhirongw/lemniscate.pytorch has only k-NN), so the grid is bench's, recorded with the
hold-out accuracy of every C.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import BenchError
from ..metrics.bootstrap import mean_samples
from . import ProtocolResult, register_protocol

__all__ = ["SvmPreset", "svm_select_and_score"]


@dataclass(frozen=True)
class SvmPreset:
    train_split: str = "trainval"
    eval_split: str = "test"
    transform: dict = field(default_factory=lambda: {"resize": 32, "crop": 32, "interpolation": "bilinear"})
    feature_mode: str | None = None
    normalize: bool = True                 # L2-normalise every feature first
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    holdout_fraction: float = 0.1
    holdout_seed: int = 0
    max_iter: int = 5000
    tol: float = 1e-4
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError("c_grid must hold at least one C > 0")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in (0, 1)")


def _l2(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _fit(x, y, C: float, max_iter: int, tol: float):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LinearSVC(C=C, loss="squared_hinge", dual="auto", max_iter=max_iter, tol=tol, random_state=0)
        clf.fit(x, y)
    return clf, any(issubclass(w.category, ConvergenceWarning) for w in caught)


def svm_select_and_score(x_train, y_train, x_test, y_test, *, c_grid, holdout_fraction: float = 0.1,
                         holdout_seed: int = 0, normalize: bool = True, max_iter: int = 5000,
                         tol: float = 1e-4) -> dict:
    """{top1, C, holdout_top1 {C: %}, unconverged [C]}: C by top-1 on the hold-out, refit on all of train."""
    from ._common import holdout_split
    x_train, x_test = np.asarray(x_train, np.float64), np.asarray(x_test, np.float64)
    if normalize:
        x_train, x_test = _l2(x_train), _l2(x_test)
    tr, ho = holdout_split(len(x_train), holdout_fraction, holdout_seed)
    if len(np.unique(y_train[tr])) < 2:
        raise BenchError("the SVM hold-out split leaves fewer than 2 classes to train on; use more training data")
    scores, unconverged = {}, []
    for C in sorted(c_grid):
        clf, warned = _fit(x_train[tr], y_train[tr], C, max_iter, tol)
        scores[C] = 100.0 * float((clf.predict(x_train[ho]) == y_train[ho]).mean())
        if warned:
            unconverged.append(C)
    best = max(sorted(scores), key=lambda c: scores[c])   # first maximum in ascending C: the smaller C wins ties
    clf, warned = _fit(x_train, y_train, best, max_iter, tol)
    if warned:
        unconverged.append(f"refit C={best:g}")
    hits = clf.predict(x_test) == y_test
    top1 = 100.0 * float(hits.mean())
    return {"top1": top1, "hits": hits, "C": best, "holdout_top1": {f"{c:g}": s for c, s in scores.items()},
            "unconverged": [str(c) for c in unconverged]}


@register_protocol("svm", preset_cls=SvmPreset, default_dataset="cifar10")
def run_svm(ctx, preset: SvmPreset) -> ProtocolResult:
    """Linear SVM (scikit-learn LinearSVC) on frozen features, C chosen on a hold-out of train (InstDisc)."""
    train = ctx.features(preset.train_split, preset.transform, feature_mode=preset.feature_mode)
    test = ctx.features(preset.eval_split, preset.transform, feature_mode=preset.feature_mode)
    if train.labels.ndim != 1:
        raise BenchError("the SVM protocol is single-label classification; this dataset is multi-label")
    grid = preset.c_grid[::2] if ctx.quick else preset.c_grid
    res = svm_select_and_score(train.features, train.labels, test.features, test.labels, c_grid=grid,
                               holdout_fraction=preset.holdout_fraction, holdout_seed=preset.holdout_seed,
                               normalize=preset.normalize, max_iter=preset.max_iter, tol=preset.tol)
    details = {"selection": f"C by top-1 on a seeded {preset.holdout_fraction:.0%} hold-out of {preset.train_split} "
                            f"(seed {preset.holdout_seed}); refit on all of {preset.train_split}; scored once on "
                            f"{preset.eval_split}",
               "C": res["C"], "holdout_top1": res["holdout_top1"], "unconverged": res["unconverged"],
               "n_train": len(train), "n_test": len(test)}
    return ProtocolResult({"top1": res["top1"]}, details=details, headline=("top1",),
                          samples={"top1": mean_samples(res["hits"])})
