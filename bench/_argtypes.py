"""Range-checked argparse types: every numeric flag is checked when it is parsed, before any work starts, so
`--micro-batch -2` is one usage line (exit 2), never a DataLoader traceback minutes later."""
from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["int_range", "float_range", "POSITIVE_INT", "NONNEGATIVE_INT", "SEED"]


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range: need {lo} ≤ N" + (f" ≤ {hi}" if hi else ""))
        return value
    parse.__name__ = f"int in [{lo}, {hi if hi is not None else '∞'}]"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < lo or value > hi or (lo_open and value == lo):
            raise argparse.ArgumentTypeError(f"{text} is out of range: need {lo} {'<' if lo_open else '≤'} x ≤ {hi}")
        return value
    parse.__name__ = f"number in {'(' if lo_open else '['}{lo}, {hi}]"
    return parse


POSITIVE_INT = int_range(1)
NONNEGATIVE_INT = int_range(0)
SEED = int_range(0, 2**32 - 1)   # numpy's seed range
