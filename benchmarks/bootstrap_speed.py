"""How long a record's bootstrap intervals take (bench.metrics.bootstrap), on one core, no forward pass:

    python benchmarks/bootstrap_speed.py [--quick]

- top-1 of 50,000 ImageNet val images, 10,000 resamples (the target: under 1 s): the multinomial path over the
  distinct per-sample values;
- the same interval by drawing 10,000 × 50,000 indices (what the multinomial path replaces), on a 1,000-resample
  slice, scaled up — the ratio is the point;
- the paired difference of two such records (`bench compare`);
- mIoU of 2,000 ADE20K val images × 150 classes (per-image intersection and union), 10,000 resamples;
- mAP over 70 ROxford queries, 10,000 resamples.
--quick: a tenth of the resamples.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bench.metrics.bootstrap import interval, mean_samples, miou_samples, paired_distribution  # noqa: E402


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    b = 1_000 if p.parse_args().quick else 10_000
    rng = np.random.default_rng(0)
    a_hits, b_hits = rng.random(50_000) < 0.761, rng.random(50_000) < 0.755
    t_top1 = _time(lambda: interval(mean_samples(a_hits), resamples=b))
    sl = 1_000
    t_idx = _time(lambda: a_hits[rng.integers(0, 50_000, (sl, 50_000))].mean(1), repeat=1) * b / sl
    t_pair = _time(lambda: paired_distribution(mean_samples(a_hits), mean_samples(b_hits), resamples=b))
    inter = rng.integers(0, 5_000, (2_000, 150)) * (rng.random((2_000, 150)) < 0.15)
    union = inter + rng.integers(0, 5_000, (2_000, 150)) * (rng.random((2_000, 150)) < 0.2)
    t_miou = _time(lambda: interval(miou_samples(inter, union), resamples=b), repeat=1)
    t_map = _time(lambda: interval(mean_samples(rng.beta(2, 3, 70)), resamples=b))
    print(f"resamples: {b}, one core")
    print(f"top-1, 50,000 samples:           {t_top1:7.3f} s  (index resampling: {t_idx:.2f} s, "
          f"{t_idx / t_top1:.0f}x slower)")
    print(f"paired top-1 difference:         {t_pair:7.3f} s")
    print(f"mIoU, 2,000 images x 150 classes: {t_miou:7.3f} s")
    print(f"mAP, 70 queries:                 {t_map:7.3f} s")


if __name__ == "__main__":
    main()
