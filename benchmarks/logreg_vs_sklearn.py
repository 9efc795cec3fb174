"""bench's L-BFGS logistic regression (torch, float64) against scikit-learn's LogisticRegression at the same C.

    python3 benchmarks/logreg_vs_sklearn.py                                   # CPU, 1 thread each, ~1-2 min
    python3 benchmarks/logreg_vs_sklearn.py --train 50000 --dim 768 --classes 100 --device cuda

Both sides minimise the same objective, C·Σ CE + ½‖W‖² with an unpenalised bias (scikit-learn's C, which
bench.protocols.logreg copies), in float64, with the same tolerance and iteration cap (bench's protocol defaults,
tol 1e-10, max_iter 1000). Single fit: both test accuracies, their difference, the relative distance between the
two weight matrices, and the time ratio. C path (what the protocol does to choose C): bench's `select_C`, each C
warm-started from the previous one, against scikit-learn fitting every C from zero (DINOv2's cuML loop) and with
`warm_start=True` (ssl-transfer's linear.py); prints the chosen C of each and the largest held-out top-1 gap.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

# run from a checkout without installing: this repository's bench, not another installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_time, limit_threads, machine  # noqa: E402


def _blobs(n: int, dim: int, classes: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class blobs (shared centres, seeded rows): separable-ish, so C matters and accuracy is < 100%."""
    centers = np.random.default_rng(1234).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    return (centers[y] + noise * rng.normal(size=(n, dim))).astype(np.float32), y


def _sk_fit(x, y, C, max_iter, tol, init=None):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=init is not None)
    if init is not None:
        clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def single_fit(a, x, y, xt, yt, device) -> None:
    from bench.protocols.logreg import fit_logreg, predict_scores
    out = {}

    def ours():
        out["bench"] = fit_logreg(x, y, a.C, num_classes=a.classes, max_iter=a.max_iter, tol=a.tol, device=device)

    def sk():
        out["sklearn"] = _sk_fit(x, y, a.C, a.max_iter, a.tol)

    t_ours, t_sk = best_time(ours, a.repeats), best_time(sk, a.repeats)
    w, clf = out["bench"], out["sklearn"]
    acc_ours = float((predict_scores(w, xt).argmax(1).cpu().numpy() == yt).mean() * 100)
    acc_sk = float((clf.predict(xt) == yt).mean() * 100)
    W = w.W.cpu().numpy()
    rel = np.linalg.norm(W - clf.coef_.T) / np.linalg.norm(clf.coef_)
    print(f"single fit at C={a.C:g}")
    print(f"  bench   : {t_ours:8.3f} s  {w.n_iter:4d} iters  test top-1 {acc_ours:6.2f}%")
    print(f"  sklearn : {t_sk:8.3f} s  {int(clf.n_iter_[0]):4d} iters  test top-1 {acc_sk:6.2f}%")
    print(f"  top-1 difference bench − sklearn = {acc_ours - acc_sk:+.2f} points; "
          f"‖W_bench − W_sk‖/‖W_sk‖ = {rel:.1e}")
    print(f"  ratio sklearn / bench time = {t_sk / t_ours:.2f}  (> 1: bench is faster)")


def c_path(a, x, y, xt, yt, device) -> None:
    from bench.protocols.logreg import c_grid, select_C
    grid = [float(c) for c in c_grid(a.c_lo, a.c_hi, a.c_num)]
    out = {}

    def ours():
        out["bench"] = select_C(x, y, xt, yt, grid, num_classes=a.classes, max_iter=a.max_iter, tol=a.tol,
                                device=device, progress=False)

    def sk(warm: bool):
        def run():
            curve, prev = {}, None
            for C in grid:
                clf = _sk_fit(x, y, C, a.max_iter, a.tol, init=prev if warm else None)
                prev = clf
                curve[C] = float((clf.predict(xt) == yt).mean() * 100)
            out[f"sk{warm}"] = (max(curve, key=lambda c: (curve[c], -c)), curve)
        return run

    t_ours = best_time(ours, 1, warmup=0)
    t_cold = best_time(sk(False), 1, warmup=0)
    t_warm = best_time(sk(True), 1, warmup=0)
    best, curve = out["bench"]
    print(f"C path: {len(grid)} values 10^linspace({a.c_lo:g}, {a.c_hi:g}, {a.c_num}), scored on the test rows")
    print(f"  bench select_C (warm-started) : {t_ours:8.3f} s  best C {best:.3g}")
    for name, t, key in (("sklearn, each C from zero     ", t_cold, "skFalse"),
                         ("sklearn, warm_start=True      ", t_warm, "skTrue")):
        sk_best, sk_curve = out[key]
        gap = max(abs(curve[c] - sk_curve[c]) for c in grid)
        print(f"  {name}: {t:8.3f} s  best C {sk_best:.3g}  max |Δtop-1| over the path {gap:.2f} points  "
              f"ratio {t / t_ours:.2f}× bench")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=2000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--noise", type=float, default=4.0)
    p.add_argument("--C", type=float, default=0.1)
    p.add_argument("--tol", type=float, default=1e-10, help="both sides (bench's protocol default)")
    p.add_argument("--max-iter", type=int, default=1000, help="both sides (bench's protocol default)")
    p.add_argument("--c-lo", type=float, default=-6)
    p.add_argument("--c-hi", type=float, default=1)
    p.add_argument("--c-num", type=int, default=8, help="C-path length; 0 skips the path comparison")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and BLAS alike (default 1)")
    a = p.parse_args()
    os.environ["BENCH_PROGRESS"] = "0"
    limit_threads(a.threads)
    device = torch.device(a.device)
    x, y = _blobs(a.train, a.dim, a.classes, 0, a.noise)
    xt, yt = _blobs(a.test, a.dim, a.classes, 1, a.noise)
    x64, xt64 = x.astype(np.float64), xt.astype(np.float64)      # both sides fit in float64 (as DINOv2)
    print(f"machine: {machine()}; {a.threads} thread(s) each; bench on {device}, sklearn on CPU")
    print(f"{a.train} train × {a.test} test × {a.dim}-d, {a.classes} classes, tol {a.tol:g}, max_iter {a.max_iter}")
    single_fit(a, x64, y, xt64, yt, device)
    if a.c_num > 0:
        c_path(a, x64, y, xt64, yt, device)


if __name__ == "__main__":
    main()
