"""k-NN time and peak memory against N: bench's `knn_evaluate` vs the bare matmul + topk, each size in a fresh process.

    python benchmarks/knn_scaling.py                                  # N = 12.5k, 25k, 50k train × 384, 5k test
    python benchmarks/knn_scaling.py --sizes 50000 100000 200000 --dim 1024 --fp16
    python benchmarks/knn_scaling.py --device cuda --sizes 200000 400000 1280000 --dim 1024 --fp16   # GPU

Training features are written once per size as `train.npz` in bench's feature-file format (`--fp16`: stored as
float16, as a 1.28M × 1024 cache would be). bench opens it as `bench run --protocol knn --features` does
(`bench.cache.load_feature_split(..., mmap=True)`: a read-only memory map of the uncompressed member) and
`knn_evaluate` streams it in `train_chunk` rows, converting each chunk to float32. The bare side reads the file
whole (`np.load`) → float32 → normalise → one matmul and topk(200) and DINO's vote for each k per 1024 test rows:
it holds the fp16 file's array and its float32 copy, which is what bench avoids.
Peak memory, sampled every 5 ms above what the process held before the call: anonymous RSS (what the process
allocated; for bench it must stay one similarity block + one float32 chunk, flat in N) and total RSS (anonymous +
the file's pages mapped in; for bench it grows by the fp16 file's own size, the pages the memory map touched).
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

CHILD = r"""
import json, sys, threading, time
import numpy as np, torch, torch.nn.functional as F
from bench.cache import load_feature_split
from bench.protocols.knn import knn_evaluate
path, side, n_test, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def rss():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out["RssAnon"], out["RssAnon"] + out["RssFile"]
peak, stop = [0, 0], [False]
def sample():
    while not stop[0]:
        a, t = rss(); peak[0], peak[1] = max(peak[0], a), max(peak[1], t); time.sleep(0.005)
with np.load(f"{path}/val.npz") as z:
    xte, yte = z["features"], z["labels"]
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
base = rss()                      # from before the training file is read: loading it is part of the cost
th = threading.Thread(target=sample); th.start()
t = time.perf_counter()
if side == "bare":
    with np.load(f"{path}/train.npz") as z:
        xtr, ytr = z["features"], z["labels"]
    a = F.normalize(torch.from_numpy(xtr).float().to(device), dim=1)
    b = F.normalize(torch.from_numpy(xte).to(device), dim=1)
    y, yt = torch.from_numpy(ytr).to(device), torch.from_numpy(yte).to(device)
    c, hits = int(y.max()) + 1, 0
    for s in range(0, len(b), 1024):
        sims, idx = (b[s:s + 1024] @ a.T).topk(200, dim=1)
        w, lab = (sims / 0.07).exp(), y[idx]
        for k in (10, 20, 100, 200):
            scores = torch.zeros(len(w), c, device=device).scatter_add_(1, lab[:, :k], w[:, :k])
            hits += int((scores.argmax(1) == yt[s:s + 1024]).sum())
else:
    fs = load_feature_split(path, "train", mmap=True)        # what `bench run --features` does for k-NN
    knn_evaluate(fs.features, fs.labels, xte, yte, ks=(10, 20, 100, 200), device=device)
if device.startswith("cuda"):
    torch.cuda.synchronize()
dt = time.perf_counter() - t
stop[0] = True; th.join()
end = rss()
gpu = torch.cuda.max_memory_allocated() if device.startswith("cuda") else 0
print(json.dumps({"time": dt, "peak": max(peak[0], end[0]) - base[0], "peak_total": max(peak[1], end[1]) - base[1],
                  "gpu_peak": gpu}))
"""


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
    print(f"{a.dim}-d {'float16' if a.fp16 else 'float32'} train features (train.npz, bench memory-maps it), "
          f"{a.test} test, "
          f"k ∈ (10, 20, 100, 200), device {a.device}")
    print(f"{'N train':>9} | {'bench s':>8} {'bare s':>8} {'ratio':>6} | peak MiB anon: {'bench':>6} {'bare':>6} | "
          f"anon+file: {'bench':>6} {'bare':>6} | train file MiB  float32 MiB  sim block MiB")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            rng = np.random.default_rng(0)
            centers = rng.normal(size=(a.classes, a.dim)).astype(np.float32)
            y = rng.integers(0, a.classes, n)
            dtype = np.float16 if a.fp16 else np.float32
            x = np.empty((n, a.dim), dtype=dtype)
            for s in range(0, n, 65536):
                x[s:s + 65536] = centers[y[s:s + 65536]] + 3 * rng.normal(size=(len(y[s:s + 65536]), a.dim))
            np.savez(f"{tmp}/train.npz", features=x, labels=y)
            te = rng.integers(0, n, a.test)           # test rows: noisy copies of training rows
            np.savez(f"{tmp}/val.npz", features=x[te].astype(np.float32) + 0.5 * rng.normal(
                size=(a.test, a.dim)).astype(np.float32), labels=y[te])
            del x
            res = {}
            for side in ("bench", "bare"):
                out = subprocess.run([sys.executable, "-c", CHILD, tmp, side, str(a.test), a.device], env=env,
                                     check=True, capture_output=True, text=True).stdout
                res[side] = json.loads(out.strip().splitlines()[-1])
            mib, itemsize = 2 ** 20, 2 if a.fp16 else 4
            print(f"{n:9d} | {res['bench']['time']:8.2f} {res['bare']['time']:8.2f} "
                  f"{res['bench']['time'] / res['bare']['time']:6.2f} | {'':14}{res['bench']['peak'] / mib:6.0f} "
                  f"{res['bare']['peak'] / mib:6.0f} | {'':10} {res['bench']['peak_total'] / mib:6.0f} "
                  f"{res['bare']['peak_total'] / mib:6.0f} | {n * a.dim * itemsize / mib:14.0f} "
                  f"{n * a.dim * 4 / mib:12.0f} {min(a.test, 1024) * min(n, 65536) * 4 / mib:14.0f}"
                  + (f"   GPU peak bench {res['bench']['gpu_peak'] / mib:.0f} / bare "
                     f"{res['bare']['gpu_peak'] / mib:.0f} MiB" if a.device.startswith("cuda") else ""), flush=True)

if __name__ == "__main__":
    main()
