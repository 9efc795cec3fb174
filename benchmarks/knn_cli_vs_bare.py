"""`bench run --protocol knn --features` end to end against the bare computation, each in a fresh process.

    python benchmarks/knn_cli_vs_bare.py                       # 50,000 × 384 train, 10,000 val, 1,000 classes
    python benchmarks/knn_cli_vs_bare.py --train 20000 --test 4000 --pairs 2
    python benchmarks/knn_cli_vs_bare.py --backend faiss       # the same with `--set backend=faiss`

Both sides start a Python process, import torch and read the same two .npz files (float32 features, int64
labels); the bare side (benchmarks/_knn_bare.py) then only normalises, multiplies, takes topk(200) and votes for
k ∈ {10, 20, 100, 200}. bench runs its default preset (`dino`), writes its record and table and checks its inputs
(sha256 of each file). The two alternate, `--pairs` times; the medians and their ratio are printed (goal ≤ 1.1).
The top-1 of both must agree (printed). CPU time (user + sys of each child) is printed beside wall time: on a
shared machine it is the steadier of the two.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import machine  # noqa: E402


def timed(cmd: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def child_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--backend", default=None, help="passed to bench as --set backend=...")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        feats = Path(tmp) / "feats"
        feats.mkdir()
        rng = np.random.default_rng(0)
        centers = rng.normal(size=(a.classes, a.dim)).astype(np.float32)
        for split, n in (("train", a.train), ("val", a.test)):
            y = rng.integers(0, a.classes, n)
            x = centers[y] + 6.0 * rng.normal(size=(n, a.dim)).astype(np.float32)
            np.savez(feats / f"{split}.npz", features=x.astype(np.float32), labels=y.astype(np.int64))
        cli = [sys.executable, "-m", "bench", "run", "--protocol", "knn", "--features", str(feats), "--force",
               "--out", str(Path(tmp) / "out")] + (["--set", f"backend={a.backend}"] if a.backend else [])
        bare = [sys.executable, str(ROOT / "benchmarks" / "_knn_bare.py"), str(feats)]
        t_cli, t_bare, c_cli, c_bare = [], [], [], []
        for _ in range(a.pairs):
            c0 = child_cpu()
            t, _ = timed(cli, env)
            t_cli.append(t)
            c1 = child_cpu()
            t, bare_out = timed(bare, env)
            t_bare.append(t)
            c_cli.append(c1 - c0)
            c_bare.append(child_cpu() - c1)
        rec = json.loads(next((Path(tmp) / "out").rglob("*.json")).read_text())
    print(f"machine: {machine()}")
    print(f"{a.train} train × {a.test} val × {a.dim}-d, {a.classes} classes, k ∈ (10, 20, 100, 200); "
          f"{a.pairs} alternating pairs, medians")
    print(f"bench run --features (backend {rec['details']['backend']}): {statistics.median(t_cli):7.2f} s  "
          f"(all: {', '.join(f'{t:.2f}' for t in t_cli)})  top-1 k=20 {rec['metrics']['top1']:.2f}")
    print(f"bare matmul + topk script       : {statistics.median(t_bare):7.2f} s  "
          f"(all: {', '.join(f'{t:.2f}' for t in t_bare)})  top-1 {bare_out.strip()}")
    print(f"CPU time (user + sys): bench {statistics.median(c_cli):.2f} s, bare {statistics.median(c_bare):.2f} s")
    print(f"ratio bench / bare = {statistics.median(t_cli) / statistics.median(t_bare):.3f} wall, "
          f"{statistics.median(c_cli) / statistics.median(c_bare):.3f} CPU time (user + sys)  (goal ≤ 1.1)")
    # each pair ran back to back, so its ratio sees the same outside load on both sides
    print(f"median of the per-pair ratios: {statistics.median(a / b for a, b in zip(t_cli, t_bare)):.3f} wall, "
          f"{statistics.median(a / b for a, b in zip(c_cli, c_bare)):.3f} CPU time")


if __name__ == "__main__":
    main()
