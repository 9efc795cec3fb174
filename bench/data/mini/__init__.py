"""Miniatures of the datasets, written in the datasets' real on-disk layouts so the real readers are exercised.

Each writer registers under the dataset's folder name and writes into a temp folder that is renamed into place,
so an interrupted generation is never mistaken for a finished one.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..._io import atomic_write_json, remove_stale_temps
from ..._registry import Registry
from .._root import MINI_MARKER

__all__ = ["MINI_WRITERS", "register_mini", "write_minis", "ensure_mini", "MINI_VERSION"]

MINI_VERSION = 5
MINI_WRITERS: Registry[Callable[[Path], None]] = Registry("miniature dataset")
register_mini = MINI_WRITERS.register


def write_minis(root: Path, names: list[str] | None = None, overwrite: bool = False) -> list[str]:
    """Write the named miniatures (all by default) under `root`; returns the folders written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in MINI_WRITERS.names():   # temp folders of a killed earlier generation
        remove_stale_temps(root, f".{name}.*")
    written = []
    todo = [n for n in names or MINI_WRITERS.names() if overwrite or not (root / n).exists()]
    import os

    from tqdm.auto import tqdm
    # one bar over the datasets being written (first use: a few seconds to a minute on a busy CPU)
    bar = tqdm(todo, desc="writing miniature datasets", unit="dataset", leave=False,
               disable=not todo or os.environ.get("BENCH_PROGRESS", "1") == "0")
    for name in bar:
        bar.set_postfix_str(name, refresh=False)
        writer = MINI_WRITERS.get(name)
        final = root / name
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
        try:
            writer(tmp)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        written.append(name)
    atomic_write_json(root / MINI_MARKER, {"mini_version": MINI_VERSION, "datasets": sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))})
    return written


def ensure_mini(root: Path) -> Path:
    """The cached miniature root, generating whatever is missing (first use only)."""
    root = Path(root) / f"v{MINI_VERSION}"
    if not all((root / n).is_dir() for n in MINI_WRITERS.names()) or not (root / MINI_MARKER).is_file():
        import logging
        logging.getLogger(__name__).info("writing miniature datasets to %s (first use)", root)
        write_minis(root)
    return root


def _import_writers() -> None:
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


_import_writers()
