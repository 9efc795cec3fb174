"""Do two backbones really differ? A paired comparison of two records of the same protocol, preset and test set.

Both records store their per-sample statistics (bench.uncertainty), in the evaluation split's fixed order, so
the difference of the headline metric is bootstrapped with the same resampled items on both sides (a paired
bootstrap: the shared difficulty of an item cancels, which makes the interval far narrower than the two intervals
side by side). For a top-k accuracy — 0/1 correctness per item — the p-value is McNemar's exact test with the
mid-p correction (Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91), which keeps close to the nominal
rate where the exact test is conservative; for any other metric (mAP over queries, mIoU over images) it is the
two-sided paired-bootstrap p-value (the share of centred resampled differences at least as far from 0 as the
observed one; Efron & Tibshirani 1993, §16.4).

Two records are comparable only when they measure the same thing on the same items: the same protocol, preset
and preset version, dataset, miniature or not, --quick or not, overrides, and split sizes; anything else is
refused in one line naming the difference.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BenchError
from .metrics.bootstrap import LEVEL, RESAMPLES, mcnemar_midp, paired_distribution, percentile_interval
from .uncertainty import record_interval, record_samples

__all__ = ["comparable_problem", "compare_records", "verdict_line", "ALPHA"]

ALPHA = 0.05


def _who(rec: dict[str, Any]) -> str:
    ck = rec.get("checkpoint") or {}
    return str(ck.get("registry_name") or ck.get("name") or rec.get("run_id"))


def comparable_problem(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why two records cannot be compared item by item, or None."""
    da, db = a.get("dataset") or {}, b.get("dataset") or {}
    checks = [("protocol", a.get("protocol"), b.get("protocol")),
              ("preset", a.get("preset"), b.get("preset")),
              ("preset version", a.get("preset_version", 1), b.get("preset_version", 1)),
              ("dataset", da.get("name"), db.get("name")),
              ("miniature vs real data", bool(da.get("mini")), bool(db.get("mini"))),
              ("--quick", bool(a.get("quick")), bool(b.get("quick"))),
              ("preset overrides", a.get("overrides") or {}, b.get("overrides") or {}),
              ("split sizes", da.get("counts"), db.get("counts"))]
    for what, x, y in checks:
        if x != y:
            return f"other {what} ({x} vs {y})"
    return None


def _pick_metric(a: dict[str, Any], b: dict[str, Any], metric: str | None) -> str:
    if metric:
        return metric
    for name in a.get("headline") or []:
        if name in (a.get("samples") or {}) and name in (b.get("samples") or {}):
            return name
    raise BenchError(f"records {a.get('run_id')} and {b.get('run_id')} share no headline metric with stored "
                     f"per-sample statistics; re-run them with this version of bench (--force)")


def compare_records(a: dict[str, Any], b: dict[str, Any], *, metric: str | None = None,
                    resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The paired comparison of `metric` (default: the first headline metric both records hold statistics of)."""
    problem = comparable_problem(a, b)
    if problem:
        raise BenchError(f"records {a.get('run_id')} and {b.get('run_id')} are not comparable: {problem}")
    metric = _pick_metric(a, b, metric)
    sa, sb = record_samples(a, metric).get(metric), record_samples(b, metric).get(metric)
    if sa is None or sb is None:
        which = a if sa is None else b
        raise BenchError(f"record {which.get('run_id')} stores no per-sample statistics of {metric}; re-run it "
                         f"with --force")
    if sa.n != sb.n or sa.kind != sb.kind:
        raise BenchError(f"records {a.get('run_id')} and {b.get('run_id')} are not comparable: {metric} over "
                         f"{sa.n} vs {sb.n} items")
    diff = float(a["metrics"][metric]) - float(b["metrics"][metric])
    dist = paired_distribution(sa, sb, resamples=resamples, seed=seed)
    lo, hi = percentile_interval(dist, LEVEL)
    finite = dist[np.isfinite(dist)]
    p_boot = float((np.sum(np.abs(finite - diff) >= abs(diff)) + 1) / (len(finite) + 1))
    out = {"metric": metric, "a": _side(a, metric), "b": _side(b, metric), "difference": diff,
           "interval": {"lo": lo, "hi": hi, "level": LEVEL, "resamples": resamples, "seed": seed,
                        "method": "paired percentile bootstrap"},
           "n": sa.n, "p_bootstrap": p_boot}
    if sa.kind == "mean" and _binary(sa.arrays["values"]) and _binary(sb.arrays["values"]):
        p, n01, n10 = mcnemar_midp(sa.arrays["values"], sb.arrays["values"])
        out.update(p_value=p, test="McNemar mid-p", discordant={"a_only": n10, "b_only": n01})
    else:
        out.update(p_value=p_boot, test="paired bootstrap")
    out["significant"] = out["p_value"] < ALPHA
    out["verdict"] = verdict_line(out)
    return out


def _binary(v: np.ndarray) -> bool:
    return v.dtype == bool or bool(np.isin(v, (0.0, 1.0)).all())


def _side(rec: dict[str, Any], metric: str) -> dict[str, Any]:
    return {"run_id": rec.get("run_id"), "who": _who(rec), "value": float(rec["metrics"][metric]),
            "interval": record_interval(rec, metric), "fingerprint": rec.get("fingerprint")}


def verdict_line(c: dict[str, Any]) -> str:
    a, b, m = c["a"]["who"], c["b"]["who"], c["metric"]
    iv = c["interval"]
    stats = (f"Δ{m} = {c['difference']:+.2f} (95% CI [{iv['lo']:+.2f}, {iv['hi']:+.2f}]), {c['test']} "
             f"p = {c['p_value']:.3g}, n = {c['n']}")
    if not c["significant"]:
        return f"no significant difference between {a} and {b} at α = {ALPHA}: {stats}"
    better, worse = (a, b) if c["difference"] > 0 else (b, a)
    return f"{better} is better than {worse} at α = {ALPHA}: {stats}"
