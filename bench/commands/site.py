"""bench site [--results DIR] [--out SITE]: the leaderboards as a static site (HTML + CSS + a small script)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BenchError

HELP = "write the leaderboards as a static site (opens from disk, no server)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("site", help=HELP)
    p.add_argument("--results", help="results folder: reads RESULTS/runs/ (default: ./results, or results/local/ in "
                                     "bench's repository)")
    p.add_argument("--out", help="site folder (default RESULTS/site); replaced as a whole, so it must be new, empty "
                                 "or a site bench wrote (anything else is refused)")
    return p


def run(args) -> int:
    from ..site import write_site
    from .._results_dir import default_results
    results = Path(args.results) if args.results else default_results()
    if not results.is_dir():
        raise BenchError(f"{results}: results folder not found; run `bench run ... --out {results}` first")
    out = write_site(results, args.out)
    print(f"site written to {out}/ (open {(out / 'index.html').resolve().as_uri()})")
    return 0
