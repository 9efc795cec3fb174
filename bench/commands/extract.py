"""bench extract: features of dataset splits to DIR/<split>.npz + DIR/meta.json (the public feature format)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._argtypes import POSITIVE_INT
from ._common import add_backbone_args, add_data_args, check_run_args, load_backbone_from_args, make_context

HELP = "extract features to DIR/<split>.npz + meta.json"


def add_parser(sub) -> argparse.ArgumentParser:
    ext = sub.add_parser("extract", help=HELP)
    ext.add_argument("--split", default="train,val", help="comma-separated splits (default train,val)")
    ext.add_argument("--out", required=True, help="output folder")
    ext.add_argument("--resize", type=POSITIVE_INT, default=256)
    ext.add_argument("--crop", type=POSITIVE_INT, default=224)
    ext.add_argument("--interpolation", default="bicubic")
    add_backbone_args(ext)
    add_data_args(ext)
    return ext


def run(args) -> int:
    from .. import distributed as dd
    from .._io import atomic_write_json
    from ..cache import save_feature_split
    check_run_args(args)
    backbone = load_backbone_from_args(args)
    ctx = make_context(args, args.dataset, backbone)
    transform = {"resize": args.resize, "crop": args.crop, "interpolation": args.interpolation}
    out = Path(args.out)
    for split in [s for s in args.split.split(",") if s]:
        fs = ctx.features(split, transform)
        if dd.is_main():
            save_feature_split(out, split, fs)
            print(f"{split}: {fs.features.shape[0]} × {fs.features.shape[1]} → {out / (split + '.npz')}"
                  f"{' (cache)' if fs.meta['cache_hit'] else ''}")
    if dd.is_main():
        rep = backbone.report
        first = next(iter(ctx.inputs.values()))
        atomic_write_json(out / "meta.json", {
            "checkpoint": rep.source, "checkpoint_sha256": rep.sha256, "arch": rep.arch, "family": rep.family,
            "feature_mode": first["feature_mode"], "transform": first["transform"], "dataset": args.dataset,
            "data_root": str(ctx.data_root.path), "mini": ctx.mini,
            "amp": ctx.precision_used.get("extraction", "float32"),
            "counts": {key.split("/", 1)[1]: v["count"] for key, v in ctx.inputs.items()}})
    return 0
