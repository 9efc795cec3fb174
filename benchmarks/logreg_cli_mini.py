"""`bench run --protocol logreg --features` on the miniature ImageNet's features (1,437 × 512, the full 45-value C
path of the `dinov2` preset), end to end in a fresh process; the goal is < 30 s.

    python benchmarks/logreg_cli_mini.py                    # extracts resnet18 (seed 0) features once, then times
    python benchmarks/logreg_cli_mini.py --threads 1
    python benchmarks/logreg_cli_mini.py --device cuda      # GPU

The features come from `bench extract --model resnet18 --seed 0` on the embedded miniature (random weights:
the point is the problem's size and conditioning, 1,437 rows, 512-d, a 1,000-way head of which the miniature's
classes are present). Prints the wall time and the CPU time (on a shared machine the CPU time is the steadier
figure: wall time there includes waiting for a core), the chosen C, the iterations of the refit and the top-1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import machine  # noqa: E402


def _child_cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=0, help="OMP/MKL threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PROGRESS": "0"}
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as tmp:
        feats = Path(tmp) / "feats"
        subprocess.run([sys.executable, "-m", "bench", "extract", "--model", "resnet18", "--seed", "0", "--out",
                        str(feats), "--device", a.device], cwd=ROOT, env=env, check=True, capture_output=True)
        start, cpu0 = time.perf_counter(), _child_cpu()
        subprocess.run([sys.executable, "-m", "bench", "run", "--protocol", "logreg", "--features", str(feats),
                        "--device", a.device, "--out", str(Path(tmp) / "out")], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        wall, cpu = time.perf_counter() - start, _child_cpu() - cpu0
        rec = json.loads(next((Path(tmp) / "out").rglob("*.json")).read_text())
    d = rec["details"]
    print(f"machine: {machine()}; threads {a.threads or 'default'}; device {a.device}")
    print(f"bench run --protocol logreg --features (miniature, {len(d['selection_top1_per_C'])} values of C): "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU (user + sys)  (goal < 30 s)")
    print(f"  best C {d['best_C']:.3g}, refit {d['refit_iterations']} iterations (converged {d['refit_converged']}), "
          f"{d['n_classes']} classes, top-1 {rec['metrics']['top1']:.2f}")


if __name__ == "__main__":
    main()
