"""A record's uncertainty: the stored per-sample statistics of its headline metrics and their bootstrap intervals.

The runner calls `uncertainty_block` on what a protocol returned (`ProtocolResult.samples`); tables, `bench
compare` and `bench sensitivity` read it back with `record_samples` / `record_interval`. Nothing here runs a
model: intervals are recomputed from the stored statistics (bench.metrics.bootstrap).

Record fields:
- `samples`: {metric: {kind, scale, n, arrays: {name: {encoding, data}}}}, compact (bools packed to bits, zlib,
  base64; 50,000 ImageNet correctness bits take ~8 kB);
- `intervals`: {metric: {lo, hi, level, resamples, n, method, seed}}.
A metric whose statistics the protocol does not hand over has no interval; `uncertainty_note` says why.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .errors import BenchError
from .metrics.bootstrap import Samples, decode_samples, encode_samples, interval, statistic

__all__ = ["uncertainty_block", "record_samples", "record_interval", "combine_seed_samples", "interval_text"]

_logger = logging.getLogger(__name__)
# a stored statistic must give back the record's number; float32 accumulations inside a protocol differ in the
# last digits, a wrong per-sample array by far more
_TOLERANCE = 1e-3


def uncertainty_block(samples: dict[str, Samples], metrics: dict[str, float], *, protocol: str) -> dict[str, Any]:
    """{"samples": ..., "intervals": ...} for the record; raises when a statistic does not reproduce its metric."""
    if not samples:
        return {"intervals": {}, "uncertainty_note": f"protocol {protocol} stores no per-sample statistics yet"}
    out_samples, out_intervals = {}, {}
    for name, s in samples.items():
        if name not in metrics:
            raise BenchError(f"protocol {protocol}: samples given for {name!r}, which is not a metric (a bug)")
        again = statistic(s)
        if not abs(again - metrics[name]) <= _TOLERANCE * max(1.0, abs(metrics[name])):
            raise BenchError(f"protocol {protocol}: the per-sample statistics of {name} give {again:.4f}, the metric "
                             f"is {metrics[name]:.4f} (a bug); no record written")
        out_samples[name] = encode_samples(s)
        out_intervals[name] = interval(s)
    return {"samples": out_samples, "intervals": out_intervals}


def record_samples(rec: dict[str, Any], metric: str | None = None) -> dict[str, Samples]:
    """The stored statistics of a record ({metric: Samples}), or of one metric; a damaged entry is an error."""
    stored = rec.get("samples") or {}
    names = [metric] if metric else list(stored)
    out = {}
    for name in names:
        if name not in stored:
            continue
        try:
            out[name] = decode_samples(stored[name])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise BenchError(f"record {rec.get('run_id')}: stored samples of {name} unreadable ({e}); re-run it "
                             f"with --force") from None
    return out


def record_interval(rec: dict[str, Any], metric: str) -> tuple[float, float] | None:
    iv = (rec.get("intervals") or {}).get(metric)
    if not isinstance(iv, dict):
        return None
    lo, hi = iv.get("lo"), iv.get("hi")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in (lo, hi))
    return (float(lo), float(hi)) if ok else None


def interval_text(value: float, iv: tuple[float, float] | None) -> str:
    """'76.10 ± 0.30' when the interval is symmetric to the printed digits, else '76.10 [75.70, 76.40]'."""
    if iv is None:
        return f"{value:.2f}"
    lo, hi = iv
    below, above = value - lo, hi - value
    if abs(below - above) < 0.01 + 1e-9:
        return f"{value:.2f} ± {max(below, above):.2f}"
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def combine_seed_samples(per_seed: list[dict[str, Samples]]) -> dict[str, Samples]:
    """The statistics of the seed-mean of each metric: per-sample values averaged over seeds for a mean (the mean
    of means), otherwise a `seedmean` entry holding every seed's arrays, whose statistic is the mean over seeds of
    each seed's statistic on the same resampled items."""
    out = {}
    common = set.intersection(*(set(d) for d in per_seed)) if per_seed else set()
    for name in sorted(common):
        ss = [d[name] for d in per_seed]
        if all(s.kind == "mean" for s in ss) and len({s.n for s in ss}) == 1:
            values = np.mean([s.arrays["values"].astype(np.float64) for s in ss], axis=0)
            out[name] = Samples("mean", {"values": values}, ss[0].scale)
        elif len({(s.kind, s.n, s.scale) for s in ss}) == 1:
            out[name] = Samples("seedmean", {f"{s.kind}/{i}/{k}": v for i, s in enumerate(ss)
                                             for k, v in s.arrays.items()}, ss[0].scale,
                                {"n": ss[0].n, "per_image": []} if "n" in ss[0].meta else {})
    return out
