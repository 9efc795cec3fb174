"""The classifier behind the transfer protocol: L2-regularised logistic regression with L-BFGS, sklearn's C.

TEMPORARY: this wraps scikit-learn's `LogisticRegression(solver='lbfgs')` (multinomial, summed loss, C = 1/λ,
intercept fitted — what `linusericsson/ssl-transfer:linear.py` ran) until the float64 torch L-BFGS core of
`bench/protocols/logreg.py` (issue 4) is merged; then `fit_decision_scores` / `fit_ovr_scores` are the only
two functions to re-point. Everything else in the protocol only sees decision scores.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["fit_decision_scores", "fit_ovr_scores", "CLASSIFIER_BACKEND"]

CLASSIFIER_BACKEND = "sklearn.linear_model.LogisticRegression(lbfgs) [temporary, until bench.protocols.logreg]"


def _fit(x: np.ndarray, y: np.ndarray, C: float, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # as ssl-transfer; the record keeps max_iter
        clf.fit(x.astype(np.float64), y)
    return clf


def fit_decision_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, C: float, *,
                        num_classes: int, max_iter: int = 1000) -> np.ndarray:
    """Multinomial fit on (x_train, y_train); (N_eval, num_classes) decision scores, -inf for unseen classes."""
    clf = _fit(x_train, y_train, C, max_iter)
    dec = clf.decision_function(x_eval.astype(np.float64))
    if dec.ndim == 1:                                    # two classes: sklearn returns the positive margin only
        dec = np.stack([np.zeros_like(dec), dec], 1)
    out = np.full((len(x_eval), num_classes), -np.inf)
    out[:, clf.classes_.astype(int)] = dec
    return out


def fit_ovr_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, C: float, *,
                   max_iter: int = 1000) -> np.ndarray:
    """One binary fit per class on devkit labels (1 pos, -1 neg, 0 difficult: left out of that class's fit)."""
    cols = []
    for c in range(y_train.shape[1]):
        keep = y_train[:, c] != 0
        yc = (y_train[keep, c] > 0).astype(int)
        if yc.min() == yc.max():                          # a class with no positives (miniatures): constant score
            cols.append(np.full(len(x_eval), float(yc[0])))
            continue
        cols.append(_fit(x_train[keep], yc, C, max_iter).decision_function(x_eval.astype(np.float64)))
    return np.stack(cols, 1)
