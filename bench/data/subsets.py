"""Labelled subsets of a training set: SimCLR's ImageNet 1% / 10% lists, or a seeded class-balanced fraction.

The lists (google-research/simclr:imagenet_subsets/{1,10}percent.txt) name one training file per line
(`n04235860_14959.JPEG`); the class is the wnid before the underscore, as SwAV's eval_semisup.py reads them.
Official lists must hold exactly 12,811 / 128,116 names and every named file must exist: a short or partial
list, or a partial ImageNet, is an error that says how many are missing — never a silently smaller subset.
"""
from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ..errors import DataError

__all__ = ["SubsetSpec", "SIMCLR_SUBSET_URL", "SIMCLR_SUBSET_SIZES", "find_subset_file", "read_subset_list",
           "subset_indices", "balanced_fraction", "write_balanced_list"]

_logger = logging.getLogger(__name__)
SIMCLR_SUBSET_URL = "https://raw.githubusercontent.com/google-research/simclr/master/imagenet_subsets/{p}percent.txt"
SIMCLR_SUBSET_SIZES = {1: 12_811, 10: 128_116}


@dataclass(frozen=True)
class SubsetSpec:
    """What a run trained on: the list file (with its hash) or the seeded fraction."""
    kind: str                  # "list" or "fraction"
    percent: float
    path: str | None = None
    sha256: str | None = None
    seed: int | None = None
    count: int = 0


def read_subset_list(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subset list not found; pass --subset-file PATH (SimCLR's 1percent.txt format)")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise DataError(f"{path}: subset list is empty")
    dup = len(names) - len(set(names))
    if dup:
        raise DataError(f"{path}: subset list names {dup} files twice; use the original SimCLR list")
    return names


def find_subset_file(percent: int, data_root: Path, cache: Path, *, download: bool = True) -> Path:
    """<data_root>/imagenet/<p>percent.txt, else the cache, else a download into the cache (when online)."""
    for candidate in (Path(data_root) / "imagenet" / f"{percent}percent.txt", Path(cache) / f"{percent}percent.txt"):
        if candidate.is_file():
            return candidate
    url = SIMCLR_SUBSET_URL.format(p=percent)
    target = Path(cache) / f"{percent}percent.txt"
    if download:
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:
                atomic_write_bytes(target, resp.read())
            _logger.info("downloaded %s to %s", url, target)
            return target
        except OSError as e:
            _logger.info("could not download %s: %s", url, e)
    raise DataError(f"no {percent}% subset list: fetch {url} and put it at {target} "
                    f"(or {Path(data_root) / 'imagenet' / f'{percent}percent.txt'}), or pass --subset-file PATH")


def subset_indices(samples: list[tuple[str, int]], names: list[str], source: Path,
                   expected: int | None = None) -> np.ndarray:
    """Indices into an ImageFolder's `samples` of the listed file names, in list order; errors on any gap."""
    if expected is not None and len(names) != expected:
        raise DataError(f"{source}: lists {len(names)} images, the official list has {expected}; "
                        f"re-download it from {SIMCLR_SUBSET_URL.format(p='{1,10}')}")
    by_name = {Path(p).name: i for i, (p, _) in enumerate(samples)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"{source}: {len(missing)} of {len(names)} listed images are missing from the training "
                        f"set (e.g. {missing[0]}); the ImageNet train folder is partial or the list is wrong")
    idx = np.array([by_name[n] for n in names], dtype=np.int64)
    wrong = [n for n, i in zip(names, idx) if not Path(samples[i][0]).parent.name == n.split("_")[0]]
    if wrong:
        raise DataError(f"{source}: {len(wrong)} listed images sit in another class folder than their wnid "
                        f"(e.g. {wrong[0]})")
    return idx


def balanced_fraction(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded class-balanced subset: round(fraction·n) images split evenly over classes (±1), as SimCLR's lists.

    The classes that get the extra image are chosen by the seed too. Sorted indices.
    """
    if not 0 < fraction <= 1:
        raise DataError(f"--fraction must be in (0, 1], got {fraction}")
    targets = np.asarray(targets)
    classes = np.unique(targets)
    total = max(len(classes), int(round(fraction * len(targets))))
    rng = np.random.default_rng(seed)
    per_class = np.full(len(classes), total // len(classes))
    per_class[rng.permutation(len(classes))[: total % len(classes)]] += 1
    picked = []
    for c, n in zip(classes, per_class):
        members = np.flatnonzero(targets == c)
        if n > len(members):
            raise DataError(f"class {c} has {len(members)} images, fewer than the {n} a {fraction:.0%} subset needs")
        picked.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def write_balanced_list(samples: list[tuple[str, int]], fraction: float, seed: int, path: Path) -> Path:
    """Write a balanced subset of an ImageFolder's samples as a SimCLR-format list (file names, one per line)."""
    idx = balanced_fraction(np.array([t for _, t in samples]), fraction, seed)
    return atomic_write_bytes(path, "".join(Path(samples[i][0]).name + "\n" for i in idx).encode())


