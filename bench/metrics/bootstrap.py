"""Bootstrap intervals of a record's headline metrics, recomputed from stored per-sample statistics.

A protocol hands the runner, for each headline metric, the per-sample statistics the metric is a function of
(`Samples`): per-sample correctness for classification (the metric is their mean), per-query AP for retrieval,
per-image intersection and union areas for segmentation (mIoU = mean over classes of ΣI / ΣU). Resampling the
evaluation set with replacement and recomputing the metric costs no forward pass.

Decisions:
- percentile bootstrap (Efron & Tibshirani 1993, ch. 13), 10,000 resamples, 95%, a fixed seed, so the interval
  of a record is reproducible bit for bit;
- a mean of values taking few distinct values (0/1 correctness, or its average over seeds) is resampled exactly by
  drawing how many of the N resampled items fall on each distinct value (a multinomial over the distinct values):
  the same distribution as drawing N indices, at O(distinct values) per resample instead of O(N), which is what
  makes 10,000 × 50,000 take milliseconds (benchmarks/bootstrap_speed.py);
- any other statistic draws a (resamples × N) matrix of multiplicities in chunks and evaluates the statistic on
  the weighted sums; two statistics evaluated on the same matrix give the paired bootstrap (`bench compare`).
"""
from __future__ import annotations

import base64
import io
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Samples", "RESAMPLES", "LEVEL", "bootstrap_distribution", "paired_distribution", "interval",
           "percentile_interval", "encode_samples", "decode_samples", "mean_samples", "miou_samples",
           "mcnemar_midp", "statistic"]

RESAMPLES = 10_000
LEVEL = 0.95
_FEW_VALUES = 64          # a mean over at most this many distinct values takes the multinomial path
_CHUNK_CELLS = 4_000_000  # resamples × N multiplicities drawn at once


@dataclass
class Samples:
    """Per-sample statistics of one metric. `kind` names how the metric is computed from them (STATISTICS);
    `arrays` hold one row per sample (image, query); `scale` multiplies the statistic (100: percent)."""
    kind: str
    arrays: dict[str, np.ndarray]
    scale: float = 100.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Items resampled: one row per array, or `meta["n"]` for a kind whose arrays are not all per item
        (vocap: detections belong to images)."""
        return int(self.meta["n"]) if "n" in self.meta else len(next(iter(self.arrays.values())))


def mean_samples(values, scale: float = 100.0) -> Samples:
    """The metric is scale × mean(values): per-sample correctness (bool) or per-query AP."""
    values = np.asarray(values)
    return Samples("mean", {"values": values if values.dtype == bool else values.astype(np.float64)}, scale)


def miou_samples(intersection, union) -> Samples:
    """The metric is 100 × mean over classes (with ΣU > 0) of ΣI / ΣU, sums over the (resampled) images."""
    return Samples("miou", {"intersection": np.asarray(intersection, dtype=np.int64),
                            "union": np.asarray(union, dtype=np.int64)})


# weighted statistics: arrays and a (B, N) float matrix of multiplicities → B values (without the scale)
def _mean(a: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    return w @ a["values"].astype(np.float64) / a["values"].shape[0]


def _miou(a: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    inter, union = w @ a["intersection"].astype(np.float64), w @ a["union"].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    present = np.isfinite(iou)
    return np.where(present.any(1), np.nansum(iou, 1) / np.maximum(present.sum(1), 1), np.nan)


def _vocap(a: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    """Mean over classes (with a box in the resampled set) of the VOC 11-point AP, each detection weighted by its
    image's multiplicity (bench.metrics.detection.voc_ap_samples): a class without non-difficult boxes scores 0,
    a class without any box is left out, as voc_detection_metrics."""
    points = a["recall_points"]
    npos, nbox = w @ a["npos"].astype(np.float64), w @ a["nbox"].astype(np.float64)
    aps = np.zeros(npos.shape)
    for c in range(npos.shape[1]):
        sel = a["det_class"] == c
        if not sel.any():
            continue
        wd = w[:, a["det_image"][sel]]
        tp, fp = np.cumsum(wd * a["tp"][sel], 1), np.cumsum(wd * a["fp"][sel], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rec = tp / npos[:, c:c + 1]
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        best = np.maximum.accumulate(prec[:, ::-1], 1)[:, ::-1]
        for t in points:
            reach = rec >= t                      # NaN recall (npos 0) reaches nothing
            first = reach.argmax(1)
            aps[:, c] += np.where(reach.any(1), best[np.arange(len(w)), first], 0.0) / 11.0
    present = nbox > 0
    return np.where(present.any(1), (aps * present).sum(1) / np.maximum(present.sum(1), 1), np.nan)


def _seedmean(a: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    """Mean over seeds of each seed's statistic; arrays are named '<kind>/<seed index>/<name>'."""
    groups: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key, v in a.items():
        kind, i, name = key.split("/", 2)
        groups.setdefault((kind, i), {})[name] = v
    return np.mean([STATISTICS[kind](arrays, w) for (kind, _), arrays in groups.items()], axis=0)


STATISTICS: dict[str, Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]] = {
    "mean": _mean, "miou": _miou, "vocap": _vocap, "seedmean": _seedmean}


def statistic(s: Samples) -> float:
    """The metric on the samples as they are (every multiplicity 1): must equal the record's number."""
    return float(STATISTICS[s.kind](s.arrays, np.ones((1, s.n)))[0] * s.scale)


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> np.ndarray:
    """(b, n) counts of how often each of n items is drawn in each of b resamples of size n."""
    idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def _few_values_mean(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray | None:
    uniq, counts = np.unique(values, return_counts=True)
    if len(uniq) > _FEW_VALUES:
        return None
    n = values.shape[0]
    draws = rng.multinomial(n, counts / n, size=resamples)
    return draws @ uniq.astype(np.float64) / n


def _chunks(rng: np.random.Generator, n: int, resamples: int):
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, resamples, step):
        yield _multiplicities(rng, n, min(step, resamples - start))


def bootstrap_distribution(s: Samples, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """`resamples` values of the metric on resampled evaluation sets (scaled like the record's number)."""
    rng = np.random.default_rng(seed)
    if s.kind == "mean":
        fast = _few_values_mean(s.arrays["values"], rng, resamples)
        if fast is not None:
            return fast * s.scale
    fn = STATISTICS[s.kind]
    return np.concatenate([fn(s.arrays, w) for w in _chunks(rng, s.n, resamples)]) * s.scale


def paired_distribution(a: Samples, b: Samples, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap values of metric(A) − metric(B), both evaluated on the same resampled items (paired)."""
    if a.n != b.n or a.kind != b.kind:
        raise ValueError(f"paired bootstrap needs the same items: {a.kind} × {a.n} vs {b.kind} × {b.n}")
    if a.kind == "mean" and a.scale == b.scale:   # mean(a) − mean(b) = mean(a − b): the fast path applies
        diff = a.arrays["values"].astype(np.float64) - b.arrays["values"].astype(np.float64)
        return bootstrap_distribution(Samples("mean", {"values": diff}, a.scale), resamples=resamples, seed=seed)
    rng = np.random.default_rng(seed)
    fa, fb = STATISTICS[a.kind], STATISTICS[b.kind]
    return np.concatenate([fa(a.arrays, w) * a.scale - fb(b.arrays, w) * b.scale
                           for w in _chunks(rng, a.n, resamples)])


def percentile_interval(dist: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    dist = dist[np.isfinite(dist)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(dist, [tail, 100 - tail])
    return float(lo), float(hi)


def interval(s: Samples, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict[str, Any]:
    """The record's interval entry of one metric."""
    lo, hi = percentile_interval(bootstrap_distribution(s, resamples=resamples, seed=seed), level)
    return {"lo": round(lo, 4), "hi": round(hi, 4), "level": level, "resamples": resamples, "n": s.n,
            "method": "percentile bootstrap", "seed": seed}


def mcnemar_midp(a_correct, b_correct) -> tuple[float, int, int]:
    """(two-sided mid-p, n01, n10) of McNemar's exact test on paired 0/1 correctness (Fagerland et al. 2013):
    with b = #(A right, B wrong) and c = #(A wrong, B right), under H0 b ~ Binomial(b + c, 1/2);
    p_exact = min(1, 2·P(X ≤ min(b, c))) and mid-p = p_exact − P(X = min(b, c))."""
    from scipy.stats import binom
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    m, k = n10 + n01, min(n10, n01)
    if m == 0:
        return 1.0, n01, n10
    p_exact = min(1.0, 2 * float(binom.cdf(k, m, 0.5)))
    return float(min(1.0, p_exact - float(binom.pmf(k, m, 0.5)))), n01, n10


# ---- storage in the record: npy bytes, zlib, base64; bools packed to bits ------------------------------------

def _encode_array(x: np.ndarray) -> dict[str, Any]:
    if x.dtype == bool:
        raw, enc = np.packbits(x.astype(np.uint8)).tobytes(), "bits"
        return {"encoding": enc, "n": int(x.shape[0]), "data": base64.b64encode(zlib.compress(raw, 9)).decode()}
    if x.dtype.kind == "f" and x.size > 1024:   # per-sample values: float32 is ample; constants stay exact
        x = x.astype(np.float32)
    elif x.dtype.kind in "iu":
        x = x.astype(np.int32) if np.abs(x).max(initial=0) < 2 ** 31 else x.astype(np.int64)
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return {"encoding": "npy", "data": base64.b64encode(zlib.compress(buf.getvalue(), 9)).decode()}


def _decode_array(d: dict[str, Any]) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(d["data"]))
    if d["encoding"] == "bits":
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: int(d["n"])].astype(bool)
    if d["encoding"] == "npy":
        return np.load(io.BytesIO(raw), allow_pickle=False)
    raise ValueError(f"unknown sample encoding {d['encoding']!r}")


def encode_samples(s: Samples) -> dict[str, Any]:
    return {"kind": s.kind, "scale": s.scale, "n": s.n, **({"meta": s.meta} if s.meta else {}),
            "arrays": {k: _encode_array(np.asarray(v)) for k, v in s.arrays.items()}}


def decode_samples(d: dict[str, Any]) -> Samples:
    """A record's stored samples (untrusted: npy without pickles, a known kind, arrays of one length)."""
    if not isinstance(d, dict) or d.get("kind") not in STATISTICS or not isinstance(d.get("arrays"), dict):
        raise ValueError("not a samples entry (kind and arrays)")
    arrays = {k: _decode_array(v) for k, v in d["arrays"].items()}
    meta = d.get("meta") or {}
    n = meta.get("n")
    if n is None and len({len(v) for v in arrays.values()}) != 1:
        raise ValueError("sample arrays of different lengths")
    if n is not None and any(len(arrays[k]) != n for k in meta.get("per_image", ()) if k in arrays):
        raise ValueError(f"per-image arrays are not {n} long")
    if d["kind"] == "seedmean" and any(k.count("/") < 2 or k.split("/")[0] not in STATISTICS for k in arrays):
        raise ValueError("seedmean arrays must be named <kind>/<seed>/<name>")
    return Samples(d["kind"], arrays, float(d.get("scale", 100.0)), meta)
