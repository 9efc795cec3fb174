"""DAVIS-2017 (semi-supervised) in its release layout: `DAVIS/ImageSets/2017/{train,val}.txt` (one sequence per
line), `DAVIS/JPEGImages/480p/<seq>/<frame>.jpg` and `DAVIS/Annotations/480p/<seq>/<frame>.png` (palette PNGs:
0 background, 1..K objects, 255 void), as davisvideochallenge/davis2017-evaluation davis2017/davis.py reads it.
Frames are listed sorted (DINO eval_video_segmentation.py:191-194 `read_frame_list`). A missing split file,
sequence folder or annotation is a one-line error naming it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .datasets import DatasetSpec, register_dataset

__all__ = ["DavisSequence", "DavisSplit", "read_annotation"]


def read_annotation(path: Path) -> np.ndarray:
    """Object ids of a palette PNG (mode P or L), H×W uint8."""
    from PIL import Image
    if not path.is_file():
        raise DataError(f"{path}: annotation not found; extract DAVIS-2017 Annotations/480p there")
    with Image.open(path) as im:
        return np.array(im)


@dataclass
class DavisSequence:
    name: str
    frames: list[Path]
    annotations: list[Path]       # same stems as the frames (all frames are annotated in train/val)


class DavisSplit:
    """The sequences of one split (a list-like of DavisSequence)."""

    def __init__(self, root: Path, split: str, transform=None, resolution: str = "480p"):
        lst = root / "ImageSets" / "2017" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"{lst}: sequence list not found; extract DAVIS-2017 trainval (ImageSets/2017) there")
        names = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
        self.sequences = []
        for name in names:
            fdir, adir = root / "JPEGImages" / resolution / name, root / "Annotations" / resolution / name
            if not fdir.is_dir():
                raise DataError(f"{fdir}: frames of sequence {name!r} not found (JPEGImages/{resolution})")
            if not adir.is_dir():
                raise DataError(f"{adir}: annotations of sequence {name!r} not found (Annotations/{resolution})")
            frames = sorted(fdir.glob("*.jpg"))
            if not frames:
                raise DataError(f"{fdir}: no .jpg frames")
            self.sequences.append(DavisSequence(name, frames, [adir / f"{f.stem}.png" for f in frames]))
        self.split = split

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> DavisSequence:
        return self.sequences[i]

    def __repr__(self) -> str:
        return f"DavisSplit({self.split}, {len(self)} sequences)"


register_dataset(DatasetSpec(name="davis2017", folder="DAVIS", splits=("train", "val"),
                             open=lambda root, split, tf: DavisSplit(root, split, tf), manifest={"val": 30}))
