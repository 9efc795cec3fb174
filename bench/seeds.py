"""`--seeds N`: run a training protocol N times (seeds seed … seed+N-1) and keep one record of all of them.

MoCo reports VOC detection as the mean of 5 trials; every protocol that trains (linear, semisup, finetune,
detection, segmentation, voc_transfer, layers, coco_detection) takes the same flag. The record's `metrics` are
the mean over seeds, `seeds` holds each seed's metrics and the mean and sample standard deviation (ddof=1), and
the bootstrap interval is that of the seed mean (bench.uncertainty.combine_seed_samples). Features come from the
cache, keyed without the seed, so the seeds share them.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import BenchError
from .protocols import ProtocolResult
from .uncertainty import combine_seed_samples

__all__ = ["DETERMINISTIC", "check_seeds", "run_seeds", "seeds_block"]

# protocols with no randomness between seeds given the features: N seeds would repeat one number N times
DETERMINISTIC = frozenset({"knn", "logreg", "retrieval", "robustness", "transfer"})


def check_seeds(protocol: str, seeds: int) -> None:
    if seeds < 1:
        raise BenchError(f"--seeds {seeds}: give at least 1")
    if seeds > 1 and protocol in DETERMINISTIC:
        raise BenchError(f"--seeds {seeds}: protocol {protocol} is deterministic on its features (every seed gives "
                         f"the same number); drop --seeds")


def seeds_block(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """{seeds, per_seed: [{seed, metrics}], mean, std} over the metrics every seed has."""
    names = sorted(set.intersection(*(set(p["metrics"]) for p in per_seed)))
    table = {k: np.array([p["metrics"][k] for p in per_seed], dtype=np.float64) for k in names}
    return {"seeds": [p["seed"] for p in per_seed], "per_seed": per_seed,
            "mean": {k: float(v.mean()) for k, v in table.items()},
            "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in table.items()}}


def run_seeds(run, ctx, preset, seeds: int) -> ProtocolResult:
    """Call `run(ctx, preset)` once per seed; the combined result (metrics = mean over seeds)."""
    from .train import seed_everything
    base = ctx.seed
    results: list[tuple[int, ProtocolResult]] = []
    try:
        for i in range(seeds):
            ctx.seed = base + i
            seed_everything(ctx.seed)
            results.append((ctx.seed, run(ctx, preset)))
    finally:
        ctx.seed = base
    if seeds == 1:
        return results[0][1]
    block = seeds_block([{"seed": s, "metrics": r.metrics} for s, r in results])
    first = results[0][1]
    details = {**first.details, "per_seed_details": [r.details for _, r in results]}
    return ProtocolResult(block["mean"], details, first.headline,
                          samples=combine_seed_samples([r.samples for _, r in results]), seeds=block)
