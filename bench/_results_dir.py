"""Where records and tables go when no folder is named: a clean checkout stays clean.

Outside bench's repository the default is the working directory's `results/`. Inside it, `./results/` is the
committed leaderboard (the folder holding `regenerate.py`, its own regeneration command); the README's commands
must not rewrite it, so by default they write to `results/local/` (git-ignored) instead. The committed folder is
written only when named (`--out results`, `bench table --results results`, `python results/regenerate.py`), and
`bench table --check` reads it by default.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_results", "COMMITTED_MARKER", "LOCAL_SUBDIR"]

COMMITTED_MARKER = "regenerate.py"    # only the committed leaderboard carries its own regeneration script
LOCAL_SUBDIR = "local"


def default_results(*, committed: bool = False) -> Path:
    """$BENCH_RESULTS, else `results/` — or `results/local/` when `results/` is the committed leaderboard and the
    caller does not ask for it (`committed=True`: `bench table --check`)."""
    if env := os.environ.get("BENCH_RESULTS"):
        return Path(env)
    here = Path("results")
    if not committed and (here / COMMITTED_MARKER).is_file():
        return here / LOCAL_SUBDIR
    return here
