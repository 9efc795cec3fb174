"""SPair-71k in its release layout: `SPair-71k/JPEGImages/<category>/<image>.jpg` and
`SPair-71k/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<category>.json`, each pair holding `src_imname`,
`trg_imname`, `category`, `src_kps` / `trg_kps` ([[x, y], ...], corresponding rows), `trg_bndbox` ([x1, y1, x2, y2])
and `trg_imsize` ([w, h, c]) — the fields DIFT's eval_spair.py reads. A missing folder, image or malformed pair
file is a one-line error naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import DatasetSpec, register_dataset

__all__ = ["SPairPair", "SPairSplit"]

_SPLIT_FOLDERS = {"train": "trn", "val": "val", "test": "test"}


@dataclass
class SPairPair:
    name: str
    category: str
    src: str                 # image path relative to JPEGImages/
    trg: str
    src_kps: np.ndarray      # (K, 2) x, y
    trg_kps: np.ndarray
    trg_bbox: tuple[float, float, float, float]
    trg_size: tuple[int, int]   # (h, w)


def _pair(path: Path) -> SPairPair:
    try:
        d = json.loads(path.read_text())
        cat = str(d["category"])
        src_kps, trg_kps = np.asarray(d["src_kps"], float).reshape(-1, 2), np.asarray(d["trg_kps"], float).reshape(-1, 2)
        w, h = int(d["trg_imsize"][0]), int(d["trg_imsize"][1])
        pair = SPairPair(path.stem, cat, f"{cat}/{d['src_imname']}", f"{cat}/{d['trg_imname']}", src_kps, trg_kps,
                         tuple(float(v) for v in d["trg_bndbox"][:4]), (h, w))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise DataError(f"{path}: not an SPair-71k pair annotation ({e})") from None
    if len(src_kps) != len(trg_kps):
        raise DataError(f"{path}: {len(src_kps)} source but {len(trg_kps)} target keypoints")
    return pair


class SPairSplit:
    """The pairs of one split and the list of images they use (sorted, each once)."""

    def __init__(self, root: Path, split: str, transform=None):
        pdir = root / "PairAnnotation" / _SPLIT_FOLDERS[split]
        if not pdir.is_dir():
            raise DataError(f"{pdir}: pair annotations not found; extract SPair-71k (PairAnnotation/) there")
        self.images_dir = root / "JPEGImages"
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: images not found; extract SPair-71k (JPEGImages/) there")
        self.pairs = [_pair(p) for p in sorted(pdir.glob("*.json"))]
        if not self.pairs:
            raise DataError(f"{pdir}: no pair annotation (.json)")
        self.images = sorted({p.src for p in self.pairs} | {p.trg for p in self.pairs})
        for rel in self.images:
            if not (self.images_dir / rel).is_file():
                raise DataError(f"{self.images_dir / rel}: image named by a pair annotation not found")
        self.split = split

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"SPairSplit({self.split}, {len(self.pairs)} pairs, {len(self.images)} images)"


register_dataset(DatasetSpec(name="spair71k", folder="SPair-71k", splits=("train", "val", "test"),
                             open=lambda root, split, tf: SPairSplit(root, split, tf), manifest={"test": 12_234}))
