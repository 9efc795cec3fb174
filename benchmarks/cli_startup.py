"""Wall time of the CLI's cheap commands against `import torch`, each in a fresh interpreter.

    python3 benchmarks/cli_startup.py            # ~20 s; goal: help and list < 0.5 s, ratio to torch well under 1

`bench --help` and `bench list presets|layouts|…` should not pay for torch, timm or the protocols; the ratio
column says how much of a bare `import torch` each command costs (> 1 means it imports torch and more).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {"bench --help": ["-m", "bench", "--help"],
            "bench run --help": ["-m", "bench", "run", "--help"],
            "bench list presets": ["-m", "bench", "list", "presets"],
            "bench list protocols": ["-m", "bench", "list", "protocols"],
            "import torch (reference)": ["-c", "import torch"]}


def _wall(args: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}   # this checkout's bench, not an installed copy
    times = []
    for _ in range(repeats + 1):                     # the first run warms the file cache
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    times = {name: _wall(cmd, args.repeats) for name, cmd in COMMANDS.items()}
    torch_s = times["import torch (reference)"]
    print(f"{'command':28s} {'best s':>7s} {'÷ import torch':>15s}")
    for name, t in times.items():
        print(f"{name:28s} {t:7.3f} {t / torch_s:15.2f}")


if __name__ == "__main__":
    main()
