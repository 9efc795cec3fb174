"""bench table [--results DIR] [--check]: regenerate the leaderboards (Markdown, CSV, plots) from DIR/runs/*.json,
or with --check only verify that the committed ones are what the records regenerate (CI runs it). --coverage: which
reference-table rows a registered checkpoint can measure (bench/coverage.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import BenchError

HELP = "regenerate leaderboard tables and plots from the run records (--check: verify them)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("table", help=HELP)
    p.add_argument("--results", help="results folder: reads RESULTS/runs/, writes tables into RESULTS/ (default: "
                                     "./results, or results/local/ in bench's repository; --check: ./results, the "
                                     "committed leaderboard)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when a table or plot in RESULTS/ differs from what the records "
                        "regenerate, is missing, or is stale")
    p.add_argument("--coverage", action="store_true",
                   help="print, for each reference table, which documented rows a registered checkpoint "
                        "(checkpoints.yaml) can measure, and why the others cannot (reads no records)")
    return p


def run(args) -> int:
    if args.coverage:
        from ..coverage import coverage_rows, render_coverage
        print(render_coverage(coverage_rows()), end="")
        return 0
    from ..tables import check_tables, write_tables
    from .._results_dir import default_results
    results = Path(args.results) if args.results else default_results(committed=args.check)
    if not results.is_dir():
        raise BenchError(f"{results}: results folder not found; run `bench run ... --out {results}` first")
    if args.check:
        problems = check_tables(results, plots=not args.no_plots)
        for line in problems:
            print(line)
        if problems:
            print(f"bench table --check: {len(problems)} file(s) disagree with the records in {results / 'runs'}; "
                  f"run `bench table --results {results}` and commit the result")
            return 1
        print(f"bench table --check: the tables{'' if args.no_plots else ' and plots'} in {results}/ "
              f"agree with its records")
        return 0
    written = write_tables(results, plots=not args.no_plots)
    n_tables = sum(1 for p in written if p.suffix == ".md" and p.name != "index.md")
    n_plots = sum(1 for p in written if p.suffix == ".png")
    print(f"{n_tables} tables and {n_plots} plots written to {results}/ (index: {results / 'index.md'})")
    return 0
