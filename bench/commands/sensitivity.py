"""bench sensitivity --ckpt X --protocol P: P's number under one changed protocol choice at a time (bench.sensitivity),
written to RESULTS/sensitivity/<name>.json, .md and .png (shown by `bench site`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import add_backbone_args, add_data_args, check_run_args, load_backbone_from_args, make_context

HELP = "vary one protocol choice at a time (feature, crop, interpolation, normalisation, k/T, lr/wd/C grids)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sensitivity", help=HELP, description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", required=True, help="knn, linear, logreg or retrieval")
    p.add_argument("--preset", help="the published preset the variants start from (default: the file's default)")
    p.add_argument("--metric", help="metric to report (default: the protocol's headline metric)")
    p.add_argument("--out", default="results", help="results folder: the paper variant's record goes to OUT/runs/, "
                                                    "the others' to OUT/sensitivity/runs/ (default results)")
    p.add_argument("--axes", help="comma-separated axes to vary (default: all), e.g. feature,k,temperature")
    p.add_argument("--quick", action="store_true", help="each variant's --quick run")
    p.add_argument("--no-plot", action="store_true", help="table and record only")
    add_backbone_args(p)
    add_data_args(p, default_dataset=None)
    return p


def run(args) -> int:
    check_run_args(args)
    from ..protocols import get_protocol
    from ..sensitivity import run_sweep
    from ..sensitivity_report import write_sweep
    spec = get_protocol(args.protocol)
    backbone = load_backbone_from_args(args)
    ctx = make_context(args, args.dataset or spec.default_dataset, backbone)
    name = args.ckpt or args.model or "resnet18"
    sweep = run_sweep(ctx, args.protocol, preset=args.preset, ckpt_name=Path(name).stem if args.ckpt and
                      Path(name).suffix else name, out_dir=Path(args.out), metric=args.metric,
                      axes=[a.strip() for a in args.axes.split(",") if a.strip()] if args.axes else None)
    paths = write_sweep(sweep, Path(args.out), plot=not args.no_plot)
    paper = next(p for p in sweep["points"] if p["paper"])
    spread = sweep["spread"].get("all", {})
    print(f"{args.protocol} · {sweep['preset']} · {name}: {sweep['metric']} {paper['value']:.2f} as published; "
          f"{len(sweep['points'])} variants span {spread.get('min', float('nan')):.2f} – "
          f"{spread.get('max', float('nan')):.2f} (spread {spread.get('spread', float('nan')):.2f})")
    for axis, v in sweep["spread"].items():
        if axis != "all":
            print(f"  {axis:<14} spread {v['spread']:.2f}")
    failed = [p for p in sweep["points"] if p.get("value") is None]
    for p in failed:
        print(f"  failed: {p['axis']}={p['label']}: {p['error']}")
    print(f"written: {paths[1]}")
    return 0
