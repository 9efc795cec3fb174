"""bench check [--expected FILE|DIR] [--results DIR]: CI regression check against results/expected/*.yaml."""
from __future__ import annotations

import argparse
import tempfile
import time
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
    n, failures, done = len(expectations), 0, 0
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        results = Path(args.results) if args.results else Path(tmp)
        try:
            for i, exp in enumerate(expectations, 1):
                # one line per pin before it runs (a pin may train a reference checkpoint first: minutes), on
                # stderr so stdout stays the PASS/FAIL report
                _say(f"bench check [{i}/{n}] {exp.path.name}: bench {' '.join(exp.args)}")
                t0 = time.perf_counter()
                rows = compare(exp, run_expectation(exp, results))
                failures += any(not ok for *_, ok in rows)
                done += 1
                print(format_result(exp, rows), flush=True)
                _say(f"bench check [{i}/{n}] {exp.path.name}: {time.perf_counter() - t0:.0f} s")
        except KeyboardInterrupt:
            _say(f"bench check: interrupted; {done}/{n} pins ran ({done - failures} held)"
                 + (f", their records are in {results / 'check'}" if args.results else ""))
            raise
    print(f"bench check: {n - failures}/{n} expectations hold")
    return 1 if failures else 0


def _say(line: str) -> None:
    import os
    import sys
    if os.environ.get("BENCH_PROGRESS", "1") != "0":
        print(line, file=sys.stderr, flush=True)
