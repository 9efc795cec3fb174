"""bench data mini --root DIR: the miniature datasets in their real on-disk layouts."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "dataset utilities (miniatures)"


def add_parser(sub) -> argparse.ArgumentParser:
    data = sub.add_parser("data", help=HELP)
    dsub = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    mini = dsub.add_parser("mini", help="write the miniature datasets in their real layouts")
    mini.add_argument("--root", required=True)
    mini.add_argument("--only", help="comma-separated dataset folders (default all)")
    mini.add_argument("--overwrite", action="store_true")
    return data


def run(args) -> int:
    from ..data.mini import write_minis
    names = [n for n in (args.only or "").split(",") if n] or None
    written = write_minis(Path(args.root), names, overwrite=args.overwrite)
    print(f"miniatures in {args.root}: wrote {', '.join(written) if written else 'nothing (all present)'}")
    return 0


