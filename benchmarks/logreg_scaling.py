"""Logistic regression's peak memory against N on fp16 features: the protocol's path (hold-out views, C path,
refit on all rows) in a fresh process per size; peak memory must grow by the features' own size only.

    python benchmarks/logreg_scaling.py                                   # 100k, 200k, 400k × 1024 fp16, 10 classes
    python benchmarks/logreg_scaling.py --sizes 320000 640000 1280000 --classes 1000 --device cuda   # GPU

Each child fills an N × D float16 array in memory (as `bench run --features` would hold a fp16 cache), then runs
what `run_logreg` runs on it without a test split: `holdout_split` (10%, seed 0), `select_C` on `Rows` index views
of the two parts, and the refit on all rows. Few C values and iterations: the point is memory, not convergence.
Printed: the features' size, the process's peak anonymous RSS above what it held before the features existed
(sampled every 5 ms), and that peak minus the features (what the solver added: one float64 chunk of rows and
the per-chunk logits, constant in N; a float64 copy of the features would add 4× their size, a float32 one 2×).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r'''
import json, sys, threading, time
import numpy as np, torch
from bench.protocols.logreg import Rows, c_grid, fit_logreg, holdout_split, select_C
n, d, k, n_c, iters, chunk, device = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                                      int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])

def anon_rss():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
base = anon_rss()
rng = np.random.default_rng(0)
centers = rng.normal(size=(k, d)).astype(np.float32)
y = rng.integers(0, k, n)
x = np.empty((n, d), dtype=np.float16)
for s in range(0, n, 16384):
    x[s:s + 16384] = centers[y[s:s + 16384]] + 3 * rng.standard_normal((len(y[s:s + 16384]), d), dtype=np.float32)
peak, stop = [anon_rss()], [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], anon_rss()); time.sleep(0.005)
th = threading.Thread(target=sample); th.start()
t = time.perf_counter()
tr, ho = holdout_split(n, 0.1, 0)
kw = dict(num_classes=k, max_iter=iters, device=device, chunk=chunk)
best, _ = select_C(Rows((x, tr)), y[tr], Rows((x, ho)), y[ho], c_grid(-2, 0, n_c), progress=False, **kw)
w = fit_logreg(x, y, best, **kw)
dt = time.perf_counter() - t
stop[0] = True; th.join()
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({"time": dt, "peak": max(peak[0], anon_rss()) - base, "features": x.nbytes, "gpu_peak": gpu}))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 200_000, 400_000])
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--c-num", type=int, default=2, help="values of C on the path")
    p.add_argument("--max-iter", type=int, default=3)
    p.add_argument("--chunk", type=int, default=65536, help="rows per chunk (fit_logreg's default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    from _util import machine
    print(f"machine: {machine()}; {a.threads} thread(s); device {a.device}")
    print(f"{a.dim}-d float16 features in memory, {a.classes} classes, {a.c_num} values of C, max_iter {a.max_iter}, "
          f"chunk {a.chunk} rows; hold-out 10% + C path + refit on all rows")
    print(f"{'N':>9} | {'features MiB':>12} {'peak MiB':>9} {'peak − features':>15} | {'float64 copy MiB':>16} | "
          f"{'time s':>7}")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(a.threads),
           "MKL_NUM_THREADS": str(a.threads), "BENCH_PROGRESS": "0"}
    mib = 2 ** 20
    for n in a.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(a.dim), str(a.classes), str(a.c_num),
                              str(a.max_iter), str(a.chunk), a.device], env=env, check=True, capture_output=True,
                             text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{n:9d} | {r['features'] / mib:12.0f} {r['peak'] / mib:9.0f} {(r['peak'] - r['features']) / mib:15.0f} | "
              f"{n * a.dim * 8 / mib:16.0f} | {r['time']:7.1f}"
              + (f"   GPU peak {r['gpu_peak'] / mib:.0f} MiB" if a.device.startswith("cuda") else ""), flush=True)


if __name__ == "__main__":
    main()
