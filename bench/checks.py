"""Regression checks: re-run small, pinned bench runs and compare their metrics with `results/expected/*.yaml`.

An expectation file (one run each):

    description: k-NN (DINO preset) of a random resnet18 on the miniature ImageNet
    args: [run, --protocol, knn, --model, resnet18, --seed, "0"]   # bench CLI arguments, no --out
    tolerance: 0.3            # absolute, in the metric's unit (percent points), for every metric below
    tolerances: {top5: 0.5}   # optional per-metric overrides
    metrics: {top1: 63.06, top5: 95.83}

The run goes to `<results>/check/<file stem>/` — a fresh temporary folder by default, so it is really re-run
(features come from the cache); with `--results DIR` an existing record there is read instead of re-run.
Expectations run on the miniatures: $BENCH_DATA is ignored unless the args name `--data-root`. A metric that
moved by more than its tolerance, or is missing from the record, fails the check.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ._yaml import read_yaml
from .errors import BenchError
from .records import read_record

__all__ = ["Expectation", "load_expectation", "expectation_files", "run_expectation", "compare", "format_result"]


@dataclass(frozen=True)
class Expectation:
    path: Path
    args: tuple[str, ...]
    metrics: dict[str, float]
    tolerance: float
    tolerances: dict[str, float] = field(default_factory=dict)
    description: str = ""

    def tolerance_for(self, metric: str) -> float:
        return self.tolerances.get(metric, self.tolerance)


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BenchError(f"{path}: {where} must be a finite number, not {value!r}")
    return float(value)


def load_expectation(path: Path | str) -> Expectation:
    path = Path(path)
    data = read_yaml(path, BenchError)
    if not isinstance(data, dict) or not {"args", "metrics", "tolerance"} <= set(data):
        raise BenchError(f"{path}: an expectation needs 'args', 'metrics' and 'tolerance' (see bench/checks.py)")
    args = data["args"]
    if not isinstance(args, list) or not args or args[0] != "run" or any(a == "--out" for a in map(str, args)):
        raise BenchError(f"{path}: 'args' must be a list starting with 'run' and without --out "
                         f"(bench check chooses the output folder)")
    if not isinstance(data["metrics"], dict) or not data["metrics"]:
        raise BenchError(f"{path}: 'metrics' must map metric names to expected values")
    metrics = {str(k): _number(path, f"metrics.{k}", v) for k, v in data["metrics"].items()}
    tols = {str(k): _number(path, f"tolerances.{k}", v) for k, v in (data.get("tolerances") or {}).items()}
    return Expectation(path, tuple(str(a) for a in args), metrics, _number(path, "tolerance", data["tolerance"]),
                       tols, str(data.get("description", "")))


def expectation_files(target: Path | str) -> list[Path]:
    target = Path(target)
    if target.is_dir():
        files = sorted(target.glob("*.yaml")) + sorted(target.glob("*.yml"))
    elif target.is_file():
        files = [target]
    else:
        raise BenchError(f"{target}: no such expectation file or folder")
    if not files:
        raise BenchError(f"{target}: no *.yaml expectation files")
    return files


@contextlib.contextmanager
def _miniature_env(args: tuple[str, ...]):
    saved = os.environ.get("BENCH_DATA")
    if "--data-root" not in args:
        os.environ.pop("BENCH_DATA", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["BENCH_DATA"] = saved


def run_expectation(exp: Expectation, results: Path) -> dict[str, Any]:
    """Run (or reuse) the expectation's bench command into `results/check/<stem>/` and return its record."""
    from .cli import main
    out = Path(results) / "check" / exp.path.stem
    buf = io.StringIO()
    # with progress on, the run's bars (training a reference checkpoint, extraction) and its error line reach the
    # terminal; its printed record stays out of the PASS/FAIL report
    quiet = os.environ.get("BENCH_PROGRESS", "1") == "0"
    err = contextlib.redirect_stderr(buf) if quiet else contextlib.nullcontext()
    with _miniature_env(exp.args), contextlib.redirect_stdout(buf), err:
        rc = main([*exp.args, "--out", str(out)])
    if rc == 130:   # the nested run was interrupted (Ctrl-C): stop the whole check, never go on to the next pin
        raise KeyboardInterrupt
    if rc != 0:
        raise BenchError(f"{exp.path}: `bench {' '.join(exp.args)}` failed (exit {rc}): {buf.getvalue().strip()}")
    runs = sorted((out / "runs").glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    if not runs:
        raise BenchError(f"{exp.path}: `bench {' '.join(exp.args)}` wrote no record under {out}/runs")
    return read_record(runs[-1])


def compare(exp: Expectation, record: dict[str, Any]) -> list[tuple[str, float, float | None, bool]]:
    """[(metric, expected, measured or None, ok)] in the expectation's order."""
    measured = record.get("metrics") or {}
    rows = []
    for metric, expected in exp.metrics.items():
        got = measured.get(metric)
        ok = got is not None and abs(float(got) - expected) <= exp.tolerance_for(metric) + 1e-9
        rows.append((metric, expected, None if got is None else float(got), ok))
    return rows


def format_result(exp: Expectation, rows: list[tuple[str, float, float | None, bool]]) -> str:
    """PASS/FAIL line and, on failure, a per-metric diff table."""
    failed = [r for r in rows if not r[3]]
    head = f"{'FAIL' if failed else 'PASS'} {exp.path}" + (f"  ({exp.description})" if exp.description else "")
    if not failed:
        return head
    width = max(6, *(len(m) for m, *_ in rows))
    lines = [head, f"  {'metric':<{width}} {'expected':>9} {'measured':>9} {'diff':>8} {'tolerance':>9}"]
    for metric, expected, got, ok in rows:
        got_s, diff_s = ("missing", "") if got is None else (f"{got:9.2f}", f"{got - expected:+8.2f}")
        mark = "" if ok else ("  <- missing from the record" if got is None else "  <- beyond tolerance")
        lines.append(f"  {metric:<{width}} {expected:9.2f} {got_s:>9} {diff_s:>8} "
                     f"{exp.tolerance_for(metric):9.2f}{mark}")
    return "\n".join(lines)
