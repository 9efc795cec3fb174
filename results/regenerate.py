#!/usr/bin/env python3
"""Regenerate the committed miniature rows of the leaderboards in one command:

    python results/regenerate.py [--results results] [--only knn,linear] [--all-checkpoints]

Each pinned command of results/expected/*.yaml (the regression pins: a protocol with its preset and --quick
sizes on the miniatures) runs on every reference miniature checkpoint (`bench data mini --checkpoints` trains
them, ~4 min on 2 cores, cached), then `bench table` rewrites the tables and plots. The trained protocols
(detection, segmentation, semisup: 5-15 min each on a busy 2-core CPU) run on the pin's own checkpoint only,
unless --all-checkpoints. The records are marked
miniature and never compared with the papers. Records of the reference checkpoints from an earlier run (other
fingerprints, e.g. after a preset version bump) are deleted first, so the committed rows are exactly this
run's; every other record under RESULTS/runs/ is left alone. Commit RESULTS/runs/ and the tables afterwards;
CI's `bench table --check` then verifies that the tables agree with the records.

$BENCH_DATA is ignored (the rows are miniature rows by definition). Exit status 1 when a run failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Pairs the pinned command cannot run: its detector (moco preset) is the C4 head, which needs a ResNet's stages.
# robustness evaluates a checkpoint's own classifier head: only the supervised reference checkpoint has one.
# coco_detection's FPN needs a hierarchical backbone (ResNet stages, PVT/Swin), not a plain ViT's one map.
UNSUPPORTED = {("detection", "mini_mae_vit_tiny16"), ("robustness", "mini_mocov2_resnet18"),
               ("robustness", "mini_mae_vit_tiny16"), ("coco_detection", "mini_mae_vit_tiny16"),
               ("layers", "mini_mae_vit_tiny16")}   # layer probes: AlexNet conv and ResNet stages only
TRAINED = {"detection", "segmentation", "semisup", "coco_detection"}


def pinned_commands(expected: Path) -> list[tuple[str, list[str], str]]:
    """(protocol, bench CLI args without the backbone, the pin's checkpoint) of every pin, by file name."""
    out = []
    for path in sorted(expected.glob("*.yaml")):
        args = [str(a) for a in yaml.safe_load(path.read_text())["args"]]
        i = args.index("--ckpt")
        out.append((args[args.index("--protocol") + 1], args[:i] + args[i + 2:], args[i + 1]))
    return out


def reference_record(path: Path, names: set[str]) -> bool:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and (rec.get("checkpoint") or {}).get("registry_name") in names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(REPO / "results"))
    parser.add_argument("--only", help="comma-separated protocols (default: every pin); keeps the other rows")
    parser.add_argument("--all-checkpoints", action="store_true",
                        help="run detection, segmentation and semisup on every reference checkpoint too")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from bench.data.mini_checkpoints import MINI_CHECKPOINTS

    results = Path(args.results)
    only = set(args.only.split(",")) if args.only else None
    env = {k: v for k, v in os.environ.items() if k != "BENCH_DATA"}
    env.setdefault("BENCH_PROGRESS", "0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    bench = [sys.executable, "-m", "bench"]

    subprocess.run(bench + ["data", "mini", "--checkpoints"], env=env, check=True)
    names = set(MINI_CHECKPOINTS)
    commands = [c for c in pinned_commands(REPO / "results" / "expected") if only is None or c[0] in only]
    for path in sorted((results / "runs").glob("*.json")):
        rec_protocol = json.loads(path.read_text()).get("protocol") if reference_record(path, names) else None
        if rec_protocol and (only is None or rec_protocol in only):
            path.unlink()
    failed = []
    for protocol, cli, pinned in commands:
        for name in sorted(names):
            only_pinned = protocol in TRAINED and not args.all_checkpoints
            if (protocol, name) in UNSUPPORTED or (only_pinned and name != pinned):
                continue
            cmd = bench + cli + ["--ckpt", name, "--out", str(results)]
            start = time.monotonic()
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            took = time.monotonic() - start
            if run.returncode == 0:
                print(f"regenerate: {protocol} × {name}: ok ({took:.0f} s)", flush=True)
            else:
                failed.append(f"{protocol} × {name}")
                tail = "\n    ".join((run.stdout + run.stderr).strip().splitlines()[-8:])
                print(f"regenerate: {protocol} × {name}: FAILED ({took:.0f} s)\n    {tail}", flush=True)
    table = subprocess.run(bench + ["table", "--results", str(results)], env=env)
    if table.returncode:
        failed.append("bench table")
    for f in failed:
        print(f"regenerate: failed: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
