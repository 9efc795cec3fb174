"""bench table [--results DIR]: regenerate the leaderboards (Markdown, CSV, plots) from DIR/runs/*.json."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BenchError

HELP = "regenerate leaderboard tables and plots from the run records"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("table", help=HELP)
    p.add_argument("--results", default="results", help="results folder: reads RESULTS/runs/, writes tables into "
                                                        "RESULTS/ (default results)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def run(args) -> int:
    from ..tables import write_tables
    results = Path(args.results)
    if not results.is_dir():
        raise BenchError(f"{results}: results folder not found; run `bench run ... --out {results}` first")
    written = write_tables(results, plots=not args.no_plots)
    n_tables = sum(1 for p in written if p.suffix == ".md" and p.name != "index.md")
    n_plots = sum(1 for p in written if p.suffix == ".png")
    print(f"{n_tables} tables and {n_plots} plots written to {results}/ (index: {results / 'index.md'})")
    return 0
