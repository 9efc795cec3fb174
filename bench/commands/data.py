"""bench data mini --root DIR: the miniature datasets in their real on-disk layouts."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "dataset utilities (miniatures)"


def add_parser(sub) -> argparse.ArgumentParser:
    data = sub.add_parser("data", help=HELP)
    dsub = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    mini = dsub.add_parser("mini", help="write the miniature datasets in their real layouts")
    mini.add_argument("--root", help="where to write the miniature datasets (required unless only --checkpoints)")
    mini.add_argument("--only", help="comma-separated dataset folders (default all)")
    mini.add_argument("--overwrite", action="store_true")
    mini.add_argument("--checkpoints", action="store_true",
                      help="also train the reference miniature checkpoints (supervised, MoCo v2, MAE; seeded, "
                           "about 3-4 min on 2 cores) into the cache, in their publishers' layouts")
    return data


def run(args) -> int:
    from ..errors import BenchError
    if not args.root and not args.checkpoints:
        raise BenchError("bench data mini: give --root DIR (the miniature datasets) and/or --checkpoints")
    if args.root:
        from ..data.mini import write_minis
        names = [n for n in (args.only or "").split(",") if n] or None
        written = write_minis(Path(args.root), names, overwrite=args.overwrite)
        print(f"miniatures in {args.root}: wrote {', '.join(written) if written else 'nothing (all present)'}")
    if args.checkpoints:
        from ..data.mini_checkpoints import MINI_CHECKPOINTS, train_mini_checkpoints
        for name, path in train_mini_checkpoints().items():
            print(f"{name}: {path}  ({MINI_CHECKPOINTS[name].description}; use --ckpt {name})")
    return 0


