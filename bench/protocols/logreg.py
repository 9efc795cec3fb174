"""L2-regularised logistic regression by L-BFGS on frozen features (DINOv2 `log_regression.py`; Kornblith et al.).

Reference code: facebookresearch/dinov2:dinov2/eval/log_regression.py (cuML `LogisticRegression(penalty='l2', C,
max_iter=1000, tol=1e-12)`, float64, C ∈ 10^linspace(−6, 5, 45), C chosen on a seeded 10% hold-out of train, refit
on all of train, evaluated on val) and Kornblith et al. 2019 / linusericsson/ssl-transfer:linear.py (sklearn
`LogisticRegression(solver='lbfgs', multinomial)`, λ = 1/C on the same grid, chosen on val, refit on train+val,
evaluated on test). Written in torch so it runs on GPU.

C has scikit-learn's meaning: the minimised objective is  C·Σᵢ CE(xᵢW + b, yᵢ) + ½‖W‖²  (the bias is not
penalised). L-BFGS minimises the same objective divided by C·n (same minimiser, better-scaled gradients).
The loss is accumulated over row chunks with one backward per chunk, so 1.28M×1000 logits never exist at once,
and the features are read as given (fp16 stays fp16) chunk by chunk: no float64 copy, no rotated copy, and the
hold-out / train+val splits are index views (`Rows`), not copies.

Public API (also used by bench/protocols/transfer.py):

    fit_logreg(x, y, C, *, num_classes=None, max_iter=1000, tol=1e-10, device="cpu", init=None,
               chunk=65536) -> LogRegWeights            # multinomial (softmax) LR, weights W (D, K), b (K)
    fit_logreg_ovr(x, Y, C, *, mask=None, ...) -> LogRegWeights
        # one binary L2 LR per column of the multi-hot Y (N, K) ∈ {0, 1}, all fitted at once (the objective is
        # a sum of independent per-class objectives); mask (N, K) bool drops entries (VOC "difficult")
    predict_scores(weights, x, *, chunk=65536) -> torch.Tensor   # (N, K) logits = decision_function
    select_C(x_tr, y_tr, x_val, y_val, C_grid, *, metric_fn=None, fit_fn=fit_logreg, warm_start=True,
             **fit_kwargs) -> (best_C, scores_per_C)
        # fits every C in ascending order, each started from the previous C's solution or its prediction from the
        # last three (warm start along the regularisation path); metric_fn(scores, y_val) -> float, higher is better
    c_grid(lo_exp=-6, hi_exp=5, n=45) -> np.ndarray     # 10 ** linspace(lo_exp, hi_exp, n)

    precondition(x, device) -> Preconditioner          # mean + covariance eigenbasis, computed once; fit_* accept it
    Rows((x, idx)) / Rows(a, b) / Rows((x, idx), b)       # x[idx], concatenate([a, b]) as views, never copied

All fitting is in float64 (as DINOv2). Ties in select_C go to the smaller C (stronger regularisation). The
optimiser is scipy's L-BFGS-B with scikit-learn's settings, on a gradient written out in torch, in preconditioned
coordinates (see `_lbfgs`), and along the C path each fit starts from the better of the previous solution and its
extrapolation in log C (`_path_starts`): the same objective and minimiser, far fewer iterations. Classes
without training rows get bias −∞ and zero weights (the objective's limit; scikit-learn leaves them out).
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BenchError, NonFiniteError
from . import ProtocolResult, register_protocol
from ._common import holdout_split, topk_percent, topk_samples

__all__ = ["LogRegWeights", "Preconditioner", "precondition", "Rows", "fit_logreg", "fit_logreg_ovr", "predict_scores",
           "select_C", "c_grid",
           "top1_metric", "LogregPreset", "split_exists"]

_logger = logging.getLogger(__name__)


@dataclass
class LogRegWeights:
    W: torch.Tensor          # (D, K) float64
    b: torch.Tensor          # (K,) float64
    C: float
    n_iter: int = 0
    converged: bool = False


def c_grid(lo_exp: float = -6, hi_exp: float = 5, n: int = 45) -> np.ndarray:
    """DINOv2 / Kornblith grid: 10 ** linspace(-6, 5, 45)."""
    return 10.0 ** np.linspace(lo_exp, hi_exp, n)


def top1_metric(scores: torch.Tensor, y) -> float:
    y = torch.as_tensor(y, device=scores.device)
    return float((scores.argmax(1) == y).double().mean() * 100)


def _as64(x, device) -> torch.Tensor:
    return torch.as_tensor(x).to(device=device, dtype=torch.float64)


class Rows:
    """Rows of one or more feature matrices read as one (N×D) matrix without copying them: `Rows((x, idx))` is
    x[idx], `Rows(a, b)` is concatenate([a, b]), `Rows((x, idx), y)` mixes both. The solver reads it in row
    chunks, so a hold-out subset or a train+val refit of 1.28M fp16 rows never exists as a second matrix."""

    def __init__(self, *parts):
        self.parts = [(p, None) if not isinstance(p, tuple) else (p[0], np.asarray(p[1])) for p in parts]
        sizes = [len(p) if i is None else len(i) for p, i in self.parts]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        dims = {int(p.shape[1]) for p, _ in self.parts}
        if len(dims) != 1:
            raise BenchError(f"feature matrices with different widths {sorted(dims)} cannot be joined")
        self.shape = (int(self.bounds[-1]), dims.pop())

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, sl: slice):
        s, e, _ = sl.indices(len(self))
        out = []
        for (p, idx), lo, hi in zip(self.parts, self.bounds[:-1], self.bounds[1:]):
            a, b = max(s, lo) - lo, min(e, hi) - lo
            if a < b:
                if idx is None:
                    out.append(torch.as_tensor(p[a:b]))
                else:
                    sel = torch.as_tensor(idx[a:b]) if isinstance(p, torch.Tensor) else idx[a:b]
                    out.append(torch.as_tensor(p[sel]))
        return torch.cat(out) if len(out) > 1 else out[0] if out else torch.zeros(0, self.shape[1])


def _rows(x, s: int, e: int, device, dtype) -> torch.Tensor:
    # always a new tensor: the caller centres it in place, and x may already be float64 on the device
    return torch.as_tensor(x[s:e]).to(device=device, dtype=dtype, copy=True)


@dataclass
class Preconditioner:
    """The features' mean and covariance eigenbasis (cov = U·diag(λ)·Uᵀ) beside the features themselves, not a
    transformed copy: the solver reads x in row chunks, converts each to float64 and centres it. Computed once
    per feature matrix (select_C: once for the whole C path)."""
    x: object                # (N, D) as given: numpy / torch / memmap / Rows, any float dtype; never copied
    mean: torch.Tensor       # (D,) float64
    U: torch.Tensor          # (D, D) orthonormal eigenvectors
    lam: torch.Tensor        # (D,) eigenvalues ≥ 0
    chunk: int
    _z: torch.Tensor | None = None   # N ≤ chunk: (x − μ)·U kept, the memory of the one chunk streaming would use

    def __len__(self) -> int:
        return len(self.x)

    @property
    def rotated(self) -> bool:
        """Whether `block` gives rotated rows (x − μ)·U (one chunk: rotating once saves a D×D×K product per
        closure) or centred rows x − μ (several chunks: rotating every chunk in every closure would cost N×D×D)."""
        return len(self) <= self.chunk

    def block(self, s: int) -> torch.Tensor:
        """Rows s … s + chunk in float64 on the solver's device: centred, and rotated if `rotated`."""
        if self._z is not None:
            return self._z
        xs = _rows(self.x, s, s + self.chunk, self.mean.device, torch.float64).sub_(self.mean)
        if self.rotated:
            self._z = xs = xs @ self.U
        return xs


def precondition(x, device: str | torch.device = "cpu", *, chunk: int = 65536) -> Preconditioner:
    """Mean and covariance eigenbasis of x (N×D, any float dtype), accumulated in float64 over row chunks."""
    if isinstance(x, Preconditioner):
        return x
    if not isinstance(x, Rows) and not isinstance(x, np.memmap):
        x = torch.as_tensor(x)
    device = torch.device(device)
    n, d = x.shape
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    for s in range(0, n, chunk):
        mean += _rows(x, s, s + chunk, device, torch.float64).sum(0)
    mean /= max(n, 1)
    # centred before the product: Σxxᵀ/n − μμᵀ cancels catastrophically for uncentred features
    cov = torch.zeros(d, d, dtype=torch.float64, device=device)
    for s in range(0, n, chunk):
        xs = _rows(x, s, s + chunk, device, torch.float64).sub_(mean)
        cov.addmm_(xs.T, xs)
        del xs   # freed before the next chunk is converted: one chunk at a time
    cov /= max(n, 1)
    lam, U = torch.linalg.eigh((cov + cov.T) / 2)
    return Preconditioner(x, mean, U, lam.clamp_min(0), chunk)


# Below about this many multiply-adds per logits product (rows × dim × classes), a second CPU thread buys nothing
# (1,437 × 512 × 1,000 and 10k × 256 × 50: same wall time at 1 and 2 threads; 5k × 512 × 1,000: 1.35× faster with 2),
# and on a busy machine its spin-waiting made the miniature's 45-C path 13× slower (docs/performance.md).
_PARALLEL_WORK = 1.5e9


@contextmanager
def _threads_for(work: float, device: torch.device):
    """One CPU thread for a small fit, restored afterwards; large fits and GPUs keep torch's setting."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or work >= _PARALLEL_WORK or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _lbfgs(pc: Preconditioner, n_out: int, loss_grad: Callable[[torch.Tensor, slice], tuple], C: float, *,
           max_iter: int, tol: float, init: LogRegWeights | list[LogRegWeights] | None, n_eff: float,
           curvature: float) -> LogRegWeights:
    """Minimise (Σ_chunks loss + ½‖W‖²/C) / n_eff by L-BFGS-B (scipy's, what scikit-learn's lbfgs solver calls).

    loss_grad(logits, rows) -> (summed loss, its gradient w.r.t. the logits); it may overwrite the logits.
    init: a starting point, or several (`select_C`'s path predictions): L-BFGS starts from the one with the lowest
    objective at this C.

    L-BFGS runs in preconditioned coordinates; the objective and its minimiser are unchanged. With the features'
    mean μ and covariance U·diag(λ)·Uᵀ, W = U·diag(δ)·V with δ_j = (a·λ_j + 1/(C·n_eff))^(-1/2) (a: the loss's
    curvature per logit, ~1/K for softmax, 1/4 for binary) and b = t·β − μW with t = a^(-1/2), so the logits are
    (x − μ)·W + t·β and the penalty ½‖W‖² = ½‖diag(δ)·V‖². The Hessian in (V, β) is then close to the identity at
    every C: in raw coordinates its condition number reached ~10⁶ on 1,437 × 512 features (weak regularisation:
    directions of small variance; strong: the unpenalised bias against the penalised W), and L-BFGS crawled for
    hundreds of iterations per C, often into max_iter. The reparametrisation is of W only: each evaluation forms W
    (D×K) once and every row chunk's logits are (x_chunk − μ)·W, so x is never rotated or copied (features of a
    single chunk are rotated once instead, see `Preconditioner.rotated`).

    The gradient is written out (two products with the features per evaluation, no autograd graph), and the
    optimiser is scipy's L-BFGS-B with scikit-learn's settings (10 corrections, 50 line-search steps, stop when
    the largest gradient entry is ≤ tol or the objective's relative decrease is ≤ 64·eps): on the 10k × 256 ×
    50 path it needs about half the iterations torch.optim.LBFGS needed and ends at a lower objective than
    scikit-learn at every C (docs/performance.md). Only the (D+1)×K parameters cross to the CPU for it.
    """
    from scipy.optimize import minimize
    U, mu = pc.U, pc.mean
    d, dev = U.shape[0], U.device
    r = 1.0 / (C * n_eff)                                   # the penalty's curvature
    delta = (curvature * pc.lam + r).rsqrt()[:, None]
    t = curvature ** -0.5
    scale = 1.0 / n_eff
    n_v = d * n_out

    def coordinates(w: LogRegWeights) -> np.ndarray:
        W0, b0 = w.W.to(U), w.b.to(U)
        return torch.cat([((U.T @ W0) / delta).ravel(), (b0 + mu @ W0) / t]).cpu().numpy()

    def value_and_grad(p: np.ndarray) -> tuple[float, np.ndarray]:
        pt = torch.from_numpy(p).to(dev)
        dV, bias = delta * pt[:n_v].view(d, n_out), pt[n_v:] * t
        if pc.rotated:   # one chunk of rotated rows: logits = z·diag(δ)·V + t·β
            z = pc.block(0)
            loss, g = loss_grad(torch.addmm(bias, z, dV), slice(0, len(pc)))
            g_dv, g_sum = z.T @ g, g.sum(0)
        else:            # row chunks of centred x against W = U·diag(δ)·V; one D×D×K product per evaluation
            W = U @ dV
            g_w, g_sum, loss = torch.zeros_like(W), torch.zeros_like(bias), 0.0
            for s in range(0, len(pc), pc.chunk):
                xs = pc.block(s)
                part, g = loss_grad(torch.addmm(bias, xs, W), slice(s, s + pc.chunk))
                g_w.addmm_(xs.T, g)
                g_sum += g.sum(0)
                loss = loss + part
                del xs, g
            g_dv = U.T @ g_w
        f = float(loss * scale + 0.5 * r * (dV * dV).sum())
        if not np.isfinite(f):
            raise NonFiniteError(f"logistic regression at C={C:g}: non-finite loss; check the features for NaN/inf")
        grad = torch.cat([(delta * (g_dv * scale + r * dV)).ravel(), g_sum * (scale * t)])
        return f, grad.cpu().numpy()

    with _threads_for(len(pc) * d * n_out, dev):
        starts = [coordinates(w) for w in _starts(init)] or [np.zeros(n_v + n_out)]
        first = None   # several starts: the chosen one's evaluation, handed to L-BFGS-B's first call, not repeated
        if len(starts) > 1:
            p0, first = min(((p, value_and_grad(p)) for p in starts), key=lambda e: e[1][0])
        else:
            p0 = starts[0]

        def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
            nonlocal first
            if first is not None and np.array_equal(p, p0):
                out, first = first, None
                return out
            return value_and_grad(p)
        res = minimize(fun, p0, jac=True, method="L-BFGS-B",
                       options=dict(maxiter=max_iter, maxfun=max(15000, 2 * max_iter), gtol=tol,
                                    ftol=64 * np.finfo(float).eps, maxcor=10, maxls=50))
    p = torch.from_numpy(res.x).to(dev)
    with torch.no_grad():
        W = U @ (delta * p[:n_v].view(d, n_out))
        b = p[n_v:] * t - mu @ W
    # status 2: the line search can no longer decrease f in float64, which at a small gradient is the minimum
    converged = res.status == 0 or (res.status == 2 and float(np.abs(res.jac).max()) <= max(tol, 1e-6))
    return LogRegWeights(W, b, C, int(res.nit), converged)


def _starts(init: LogRegWeights | list[LogRegWeights] | None) -> list[LogRegWeights]:
    """`init` as a list of starting points (fit_* take one, several or none)."""
    return [init] if isinstance(init, LogRegWeights) else list(init or [])


def _softmax_ce(y: torch.Tensor):
    """Summed cross-entropy of integer labels and its gradient w.r.t. the logits (softmax − one-hot)."""
    def loss_grad(logits: torch.Tensor, sl: slice):
        ys = y[sl]
        logits.sub_(logits.amax(1, keepdim=True))            # shift-invariant; exp cannot overflow
        picked = logits.gather(1, ys[:, None]).squeeze(1)
        e = logits.exp_()                                    # in place: one N×K buffer per chunk, not two
        s = e.sum(1)
        loss = (s.log() - picked).sum()
        g = e.div_(s[:, None])
        g[torch.arange(len(ys), device=g.device), ys] -= 1
        return loss, g
    return loss_grad


def fit_logreg(x, y, C: float, *, num_classes: int | None = None, max_iter: int = 1000, tol: float = 1e-10,
               device: str | torch.device = "cpu", init: LogRegWeights | list[LogRegWeights] | None = None,
               chunk: int = 65536) -> LogRegWeights:
    """Multinomial L2 logistic regression with sklearn's C (see module docstring), float64, L-BFGS.

    x: N×D features (any float dtype, read in row chunks, never copied), `Rows`, or their `precondition`
    (select_C computes it once for the whole C path)."""
    device = torch.device(device)
    rf = precondition(x, device, chunk=chunk)
    y = torch.as_tensor(y).to(device=device, dtype=torch.long)
    if y.ndim != 1 or len(y) != len(rf):
        raise BenchError(f"fit_logreg needs N×D features and N integer labels, got {tuple(rf.x.shape)} and "
                         f"{tuple(y.shape)}; use fit_logreg_ovr for multi-label targets")
    k = num_classes or int(y.max()) + 1
    present = torch.unique(y)
    if len(present) == k:
        return _lbfgs(rf, k, _softmax_ce(y), C,
                      max_iter=max_iter, tol=tol, init=init, n_eff=float(len(rf)),
                      curvature=1.0 / max(k, 2))
    # A class without training rows has no finite minimiser: its bias goes to −∞ (and its weights to 0), so
    # L-BFGS would run into max_iter chasing it (the miniature's 1,000-way head on a few hundred rows). Fit the
    # classes present (what scikit-learn does: classes_ = unique(y)) and give the others that limit.
    remap = torch.full((k,), -1, dtype=torch.long, device=device)
    remap[present] = torch.arange(len(present), device=device)
    sub_init = []
    for w in _starts(init):
        p_ = present.to(w.W.device)
        if torch.isfinite(w.b[p_]).all():
            sub_init.append(LogRegWeights(w.W[:, p_], w.b[p_], w.C))
    ys = remap[y]
    w = _lbfgs(rf, len(present), _softmax_ce(ys), C,
               max_iter=max_iter, tol=tol, init=sub_init, n_eff=float(len(rf)),
               curvature=1.0 / max(len(present), 2))
    W = torch.zeros(w.W.shape[0], k, dtype=w.W.dtype, device=w.W.device)
    b = torch.full((k,), -torch.inf, dtype=w.b.dtype, device=w.b.device)
    W[:, present], b[present] = w.W, w.b
    return LogRegWeights(W, b, C, w.n_iter, w.converged)


def fit_logreg_ovr(x, Y, C: float, *, mask=None, max_iter: int = 1000, tol: float = 1e-10,
                   device: str | torch.device = "cpu", init: LogRegWeights | list[LogRegWeights] | None = None,
                   chunk: int = 65536) -> LogRegWeights:
    """One binary L2 LR per class (sklearn binary objective C·Σ log(1+e^{−ỹf}) + ½‖w‖² per class), fitted jointly.

    Y: (N, K) multi-hot in {0, 1}; mask: (N, K) bool, False entries are left out of class k's loss (e.g. VOC07
    "difficult"). The joint objective is the sum of the K independent objectives, so its minimiser is theirs.
    x may be `precondition(x)`.
    """
    device = torch.device(device)
    rf = precondition(x, device, chunk=chunk)
    Y = _as64(Y, device)
    if Y.ndim != 2 or len(Y) != len(rf):
        raise BenchError(f"fit_logreg_ovr needs N×K multi-hot targets, got {tuple(Y.shape)} for {len(rf)} rows")
    M = torch.ones_like(Y) if mask is None else torch.as_tensor(mask).to(device=device, dtype=torch.float64)

    def loss_grad(logits, sl):   # Σ M·(softplus(f) − y·f) and its gradient M·(σ(f) − y)
        m, ys = M[sl], Y[sl]
        loss = (F.binary_cross_entropy_with_logits(logits, ys, reduction="none") * m).sum()
        return loss, logits.sigmoid_().sub_(ys).mul_(m)
    return _lbfgs(rf, Y.shape[1], loss_grad, C, max_iter=max_iter, tol=tol, init=init,
                  n_eff=float(len(rf)), curvature=0.25)


@torch.no_grad()
def predict_scores(weights: LogRegWeights, x, *, chunk: int = 65536) -> torch.Tensor:
    """Logits (N, K) in float64 on the weights' device: argmax for multinomial, decision_function for OvR."""
    if not isinstance(x, (Rows, np.ndarray)):
        x = torch.as_tensor(x)
    dev = weights.W.device
    out = [torch.addmm(weights.b, _rows(x, s, s + chunk, dev, torch.float64), weights.W)
           for s in range(0, len(x), chunk)]
    return torch.cat(out) if out else torch.zeros(0, weights.W.shape[1], dtype=torch.float64)


def _path_starts(path: list[LogRegWeights], C: float) -> list[LogRegWeights] | None:
    """Starting points for C from the fits before it: the last solution (a warm start) and the polynomial through
    the last three (or two) solutions, as functions of log C, evaluated at C. The regularisation path is smooth in
    log C, so the prediction starts L-BFGS nearer the minimiser (10k × 256 × 50, 45 C: 790 iterations against
    2,021 from the warm start alone); `_lbfgs` keeps whichever start has the lower objective. Classes whose bias
    is −∞ (no training rows) keep the limit."""
    if not path:
        return None
    pts = path[-3:]
    if len(pts) == 1 or len({p.C for p in pts}) < len(pts):
        return [path[-1]]
    u, xs = np.log(C), [np.log(p.C) for p in pts]
    coef = [float(np.prod([(u - xs[j]) / (xs[i] - xs[j]) for j in range(len(xs)) if j != i])) for i in range(len(xs))]
    W = sum(c * p.W for c, p in zip(coef, pts))
    finite = torch.stack([torch.isfinite(p.b) for p in pts]).all(0)
    b = torch.where(finite, sum(c * torch.where(finite, p.b, 0) for c, p in zip(coef, pts)), path[-1].b)
    return [path[-1], LogRegWeights(W, b, C)]


def select_C(x_tr, y_tr, x_val, y_val, C_grid, *, metric_fn: Callable | None = None,
             fit_fn: Callable = fit_logreg, warm_start: bool = True, progress: bool = True,
             **fit_kwargs) -> tuple[float, dict[float, float]]:
    """Fit every C (ascending, warm-started) on (x_tr, y_tr), score on (x_val, y_val); the best C and all scores.

    metric_fn(scores, y_val) -> float, higher is better; default top-1 %. Ties go to the smaller C.
    """
    from tqdm.auto import tqdm
    metric_fn = metric_fn or top1_metric
    device = torch.device(fit_kwargs.get("device", "cpu"))
    if fit_fn in (fit_logreg, fit_logreg_ovr):   # mean and eigenbasis once for the whole path
        x_tr = precondition(x_tr, device, chunk=fit_kwargs.get("chunk", 65536))
    else:
        x_tr = _as64(x_tr, device)
    scores: dict[float, float] = {}
    path: list[LogRegWeights] = []
    for C in tqdm(sorted(float(c) for c in C_grid), desc="logreg C path", unit="C", leave=False,
                  disable=not progress or os.environ.get("BENCH_PROGRESS", "1") == "0"):
        w = fit_fn(x_tr, y_tr, C, init=_path_starts(path, C) if warm_start else None, **fit_kwargs)
        path.append(w)
        scores[C] = float(metric_fn(predict_scores(w, x_val), y_val))
        _logger.debug("C=%g score=%.3f iters=%d", C, scores[C], w.n_iter)
    best = max(scores, key=lambda c: (scores[c], -c))
    return best, scores


# ---------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class LogregPreset:
    c_lo_exp: float = -6.0                 # C grid = 10 ** linspace(c_lo_exp, c_hi_exp, c_num)
    c_hi_exp: float = 5.0
    c_num: int = 45
    holdout_fraction: float = 0.1          # used when there is no separate test split
    holdout_seed: int = 0
    max_iter: int = 1000
    tol: float = 1e-10
    train_split: str = "train"
    eval_split: str = "val"
    test_split: str = "test"               # when it exists: select on eval_split, refit on train+eval, score test
    transform: dict = field(default_factory=lambda: {"resize": 224, "crop": 224, "interpolation": "bicubic"})
    feature_mode: str | None = None
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.c_num < 1 or self.max_iter < 1:
            raise ValueError("c_num and max_iter must be ≥ 1")


def split_exists(ctx, split: str) -> bool:
    """Whether `split` is available: `<split>.npz` under --features, or a split of the dataset."""
    from ..data import DATASETS
    if ctx.features_dir is not None:
        return (Path(ctx.features_dir) / f"{split}.npz").is_file()
    return ctx.dataset in DATASETS and split in DATASETS.get(ctx.dataset).splits


@register_protocol("logreg", preset_cls=LogregPreset)
def run_logreg(ctx, preset: LogregPreset) -> ProtocolResult:
    """L-BFGS multinomial logistic regression on frozen features, C chosen on a hold-out (DINOv2, Kornblith)."""
    fm, tf = preset.feature_mode, preset.transform
    train = ctx.features(preset.train_split, tf, feature_mode=fm)
    val = ctx.features(preset.eval_split, tf, feature_mode=fm)
    if train.labels.ndim != 1:
        raise BenchError("logreg is multinomial; multi-label targets need fit_logreg_ovr (transfer protocol)")
    grid = c_grid(preset.c_lo_exp, preset.c_hi_exp, preset.c_num)
    max_iter = preset.max_iter
    if ctx.quick:   # smoke run: a coarse grid and few iterations
        grid, max_iter = grid[:: max(1, len(grid) // 5)], min(max_iter, 50)
    use_test = split_exists(ctx, preset.test_split)
    if use_test:
        test = ctx.features(preset.test_split, tf, feature_mode=fm)
        sel = (train.features, train.labels, val.features, val.labels)
        fit_x = Rows(train.features, val.features)   # views: no second copy of the features
        fit_y = np.concatenate([train.labels, val.labels])
        ev_x, ev_y = test.features, test.labels
        k = ctx.num_classes(train.labels, val.labels, test.labels)
        how = f"C chosen on {preset.eval_split}, refit on {preset.train_split}+{preset.eval_split}, " \
              f"scored on {preset.test_split}"
    else:
        tr_idx, ho_idx = holdout_split(len(train), preset.holdout_fraction, preset.holdout_seed)
        sel = (Rows((train.features, tr_idx)), train.labels[tr_idx], Rows((train.features, ho_idx)),
               train.labels[ho_idx])
        fit_x, fit_y, ev_x, ev_y = train.features, train.labels, val.features, val.labels
        k = ctx.num_classes(train.labels, val.labels)
        how = f"C chosen on a seeded {preset.holdout_fraction:.0%} hold-out of {preset.train_split} " \
              f"(seed {preset.holdout_seed}), refit on all of {preset.train_split}, scored on {preset.eval_split}"
    kw = dict(num_classes=k, max_iter=max_iter, tol=preset.tol, device=ctx.device)
    best_C, curve = select_C(*sel, grid, **kw)
    w = fit_logreg(fit_x, fit_y, best_C, **kw)
    scores = predict_scores(w, ev_x)
    metrics = topk_percent(scores, ev_y)
    details = {"best_C": best_C, "selection": how, "selection_top1_per_C": {f"{c:.6g}": s for c, s in curve.items()},
               "refit_iterations": w.n_iter, "refit_converged": w.converged, "n_classes": k,
               "evaluated_on": preset.test_split if use_test else preset.eval_split,
               "grid_on_edge": best_C in (min(curve), max(curve))}
    return ProtocolResult(metrics, details=details, headline=("top1", "top5"), samples=topk_samples(scores, ev_y))
