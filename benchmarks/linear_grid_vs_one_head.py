"""Cost of the 52-head linear grid (13 DINOv2 lrs × 4 weight decays) relative to one head, on cached features.

    python3 benchmarks/linear_grid_vs_one_head.py                      # CPU, small synthetic problem
    python3 benchmarks/linear_grid_vs_one_head.py --device cuda --n 200000 --dim 1536 --classes 1000

Times bench.protocols._linear_grid.train_heads for the same number of SGD steps with 52 heads and with 1, and
prints grid/one-head (the grid's extra cost) and 52×one-head/grid (what training the heads one by one would
cost instead). Features are read once per step for all heads; the heads' GEMM work still grows with H.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

# run from a checkout without installing: this repository's bench, not another installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernels)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    from bench.protocols._linear_grid import train_heads
    from bench.protocols.linear import DINOV2_LRS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    os.environ["BENCH_PROGRESS"] = "0"
    device = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.n, a.dim, generator=g).to(device)
    y = torch.randint(0, a.classes, (a.n,), generator=g).to(device)
    lrs = [lr for lr in DINOV2_LRS for _ in range(4)]
    wds = [wd for _ in DINOV2_LRS for wd in (0.0, 1e-6, 1e-5, 1e-4)]
    kw = dict(num_classes=a.classes, epochs=a.epochs, batch_size=a.batch_size, device=device, progress=False)
    t_grid = _time(lambda: train_heads(x, y, lrs, wds, **kw), device, a.repeats)
    t_one = _time(lambda: train_heads(x, y, [1e-3], [0.0], **kw), device, a.repeats)
    print(f"device {device}, N={a.n} D={a.dim} C={a.classes} batch={a.batch_size} epochs={a.epochs}")
    print(f"one head      {t_one:8.3f} s")
    print(f"{len(lrs)}-head grid  {t_grid:8.3f} s")
    print(f"ratio grid / one head          {t_grid / t_one:6.2f}")
    print(f"speed-up vs {len(lrs)} separate runs     {len(lrs) * t_one / t_grid:6.2f}")


if __name__ == "__main__":
    main()
