"""k-NN time and peak memory against N: bench's `knn_evaluate` vs the bare matmul + topk, each size in a fresh process.

    python benchmarks/knn_scaling.py                                  # N = 12.5k, 25k, 50k train × 384, 5k test
    python benchmarks/knn_scaling.py --sizes 50000 100000 200000 --dim 1024 --fp16
    python benchmarks/knn_scaling.py --device cuda --sizes 200000 400000 1280000 --dim 1024 --fp16   # GPU

Training features are written once per size as an .npy file and opened memory-mapped (`--fp16`: stored as
float16, as a 1.28M × 1024 cache would be), so reading them costs page cache, not process memory. bench streams
them in `train_chunk` rows; the bare side (`torch.from_numpy(np.load(...))` → float32 → normalise → one matmul and
topk(200) and DINO's vote for each k per 1024 test rows) holds the whole float32 training matrix, which is
the copy bench avoids.
Peak memory is the process's peak anonymous RSS (file-backed pages of the memory map excluded), sampled every
5 ms, above what it held before the call; it should grow linearly with N only through the test-side
top-k lists (n_test × 200), not with the training set. Time: one run each (after a warm-up on a small slice).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r'''
import json, sys, threading, time
import numpy as np, torch, torch.nn.functional as F
from bench.protocols.knn import knn_evaluate
path, side, n_test, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def anon_rss():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
peak, stop = [0], [False]
def sample():
    while not stop[0]:
        peak[0] = max(peak[0], anon_rss()); time.sleep(0.005)
xtr = np.load(f"{path}/train.npy", mmap_mode="r")
ytr = np.load(f"{path}/ytrain.npy")
rng = np.random.default_rng(1)
xte = np.asarray(xtr[:n_test], dtype=np.float32) + 0.5 * rng.normal(size=(n_test, xtr.shape[1])).astype(np.float32)
yte = ytr[:n_test]
def bare():
    a = F.normalize(torch.from_numpy(np.asarray(xtr)).float().to(device), dim=1)
    b = F.normalize(torch.from_numpy(xte).to(device), dim=1)
    y, yt = torch.from_numpy(ytr).to(device), torch.from_numpy(yte).to(device)
    c, hits = int(y.max()) + 1, 0
    for s in range(0, len(b), 1024):
        sims, idx = (b[s:s + 1024] @ a.T).topk(200, dim=1)
        w, lab = (sims / 0.07).exp(), y[idx]
        for k in (10, 20, 100, 200):
            scores = torch.zeros(len(w), c, device=device).scatter_add_(1, lab[:, :k], w[:, :k])
            hits += int((scores.argmax(1) == yt[s:s + 1024]).sum())
    return hits
def ours():
    return knn_evaluate(xtr, ytr, xte, yte, ks=(10, 20, 100, 200), device=device)
fn = bare if side == "bare" else ours
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
base = anon_rss()
th = threading.Thread(target=sample); th.start()
t = time.perf_counter(); fn()
if device.startswith("cuda"):
    torch.cuda.synchronize()
dt = time.perf_counter() - t
stop[0] = True; th.join()
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({"time": dt, "peak": max(peak[0], anon_rss()) - base, "gpu_peak": gpu}))
'''


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[12_500, 25_000, 50_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    import numpy as np
    from _util import machine
    print(f"machine: {machine()}")
    print(f"{a.dim}-d {'float16' if a.fp16 else 'float32'} train features (memory-mapped .npy), {a.test} test, "
          f"k ∈ (10, 20, 100, 200), device {a.device}")
    print(f"{'N train':>9} | {'bench s':>8} {'bare s':>8} {'ratio':>6} | {'bench peak MiB':>14} {'bare peak MiB':>13}"
          f" | train MiB (float32)")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            rng = np.random.default_rng(0)
            centers = rng.normal(size=(a.classes, a.dim)).astype(np.float32)
            y = rng.integers(0, a.classes, n)
            x = np.lib.format.open_memmap(f"{tmp}/train.npy", mode="w+", dtype=np.float16 if a.fp16 else np.float32,
                                          shape=(n, a.dim))
            for s in range(0, n, 65536):
                x[s:s + 65536] = centers[y[s:s + 65536]] + 3 * rng.normal(size=(len(y[s:s + 65536]), a.dim))
            x.flush()
            del x
            np.save(f"{tmp}/ytrain.npy", y)
            res = {}
            for side in ("bench", "bare"):
                out = subprocess.run([sys.executable, "-c", CHILD, tmp, side, str(a.test), a.device], env=env,
                                     check=True, capture_output=True, text=True).stdout
                res[side] = json.loads(out.strip().splitlines()[-1])
            mib = 2 ** 20
            print(f"{n:9d} | {res['bench']['time']:8.2f} {res['bare']['time']:8.2f} "
                  f"{res['bench']['time'] / res['bare']['time']:6.2f} | {res['bench']['peak'] / mib:14.0f} "
                  f"{res['bare']['peak'] / mib:13.0f} | {n * a.dim * 4 / mib:.0f}"
                  + (f"   GPU peak bench {res['bench']['gpu_peak'] / mib:.0f} / bare "
                     f"{res['bare']['gpu_peak'] / mib:.0f} MiB" if a.device.startswith("cuda") else ""))


if __name__ == "__main__":
    main()
