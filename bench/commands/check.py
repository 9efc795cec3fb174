"""bench check [--expected FILE|DIR] [--results DIR]: CI regression check against results/expected/*.yaml."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HELP = "re-run the pinned small runs of results/expected/*.yaml and fail on metrics beyond tolerance"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help=HELP)
    p.add_argument("--expected", default="results/expected",
                   help="expectation file or folder of *.yaml (default results/expected; format: bench/checks.py)")
    p.add_argument("--results", help="read/write the check runs under RESULTS/check/ (an existing record is "
                                     "reused); default: a fresh temporary folder, so every run is repeated")
    return p


def run(args) -> int:
    from ..checks import compare, expectation_files, format_result, load_expectation, run_expectation
    expectations = [load_expectation(p) for p in expectation_files(args.expected)]
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        results = Path(args.results) if args.results else Path(tmp)
        failures = 0
        for exp in expectations:
            rows = compare(exp, run_expectation(exp, results))
            failures += any(not ok for *_, ok in rows)
            print(format_result(exp, rows))
    print(f"bench check: {len(expectations) - failures}/{len(expectations)} expectations hold")
    return 1 if failures else 0
