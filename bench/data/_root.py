"""Where datasets live: --data-root, else $BENCH_DATA, else the miniatures generated into bench's cache."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataRoot", "resolve_data_root", "cache_dir", "MINI_MARKER"]

MINI_MARKER = "BENCH_MINI.json"


def cache_dir() -> Path:
    """$BENCH_CACHE, else $XDG_CACHE_HOME/bench, else ~/.cache/bench."""
    if env := os.environ.get("BENCH_CACHE"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "bench"


@dataclass(frozen=True)
class DataRoot:
    path: Path
    mini: bool          # miniature data: numbers are smoke tests, never comparable with papers
    origin: str         # "--data-root", "$BENCH_DATA" or "mini-cache"


def resolve_data_root(arg: str | os.PathLike | None) -> DataRoot:
    if arg is not None:
        path, origin = Path(arg).expanduser(), "--data-root"
    elif os.environ.get("BENCH_DATA"):
        path, origin = Path(os.environ["BENCH_DATA"]).expanduser(), "$BENCH_DATA"
    else:
        from .mini import ensure_mini
        return DataRoot(ensure_mini(cache_dir() / "mini"), mini=True, origin="mini-cache")
    return DataRoot(path.resolve(), mini=(path / MINI_MARKER).is_file(), origin=origin)
