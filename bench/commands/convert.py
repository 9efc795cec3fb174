"""bench convert: FILE → OUT.safetensors holding only the backbone, with the load report as metadata.

The one place a trusted-but-unsafe file (Barlow/VICReg full, data2vec DeepSpeed, VISSL) needs
--trust-checkpoint; the converted file then loads with no pickle at all.
"""
from __future__ import annotations

import argparse

from .inspect import add_file_args

HELP = "write a clean backbone-only .safetensors file (with its load report) from any supported checkpoint"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help=HELP, description=HELP)
    add_file_args(p)
    p.add_argument("out", help="output .safetensors path")
    return p


def run(args) -> int:
    from pathlib import Path
    from ..backbones import load_backbone
    from ..backbones._export import save_backbone
    from ..errors import BenchError
    from ._common import check_writable_dir
    out = Path(args.out)
    if out.is_dir():
        raise BenchError(f"{out}: is a folder; give the output file, e.g. {out / 'backbone.safetensors'}")
    check_writable_dir(out.parent, "output folder")
    bb = load_backbone(args.file, args.arch, ckpt_key=args.ckpt_key, trust_checkpoint=args.trust_checkpoint)
    out = save_backbone(bb, args.out)
    rep = bb.report
    print(f"{out}: {rep.family} {rep.arch}, {rep.n_loaded} tensors ({rep.coverage:.0%}), "
          f"dropped {sum(rep.dropped.values())} keys in {len(rep.dropped)} groups")
    return 0
