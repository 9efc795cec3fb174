"""NYU Depth v2 and KITTI depth in the layouts the depth toolboxes read (BTS / Monocular-Depth-Estimation-Toolbox).

- `nyu` (folder `nyu/`): the extracted sync folders with the Eigen split files `nyu_train.txt` / `nyu_test.txt`,
  one line per image: `/<scene>/rgb_XXXXX.jpg /<scene>/sync_depth_XXXXX.png <focal>`, paths under `nyu/`
  (toolbox depth/datasets/nyu.py:99-124); depth PNGs are uint16 millimetres (depth_scale 1000); the 654 Eigen test
  images are 480×640. Lines whose depth is `None` are skipped and the list is sorted by image path, as there.
- `kitti` (folder `kitti/`): `kitti_eigen_train.txt` / `kitti_eigen_test.txt` with lines
  `<date>/<drive>_sync/image_02/data/<frame>.png <drive>_sync/proj_depth/groundtruth/image_02/<frame>.png <focal>`;
  raw images under `kitti/input/`, the annotated depth (the official `data_depth_annotated` download, whose
  `train/` and `val/` folders are both searched) under `kitti/data_depth_annotated/`; uint16 depth / 256 m. Images
  and depth maps are KB-cropped to the bottom 352 × centre 1216 pixels (toolbox kitti.py:227-235, the
  KBCrop of its pipelines).
A missing split file, image or depth map is a one-line error naming the path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import DatasetSpec, load_rgb, register_dataset

__all__ = ["DepthImages", "DEPTH_DATASETS", "read_split_file"]


@dataclass(frozen=True)
class _Layout:
    split_files: dict[str, str]
    image_dir: str
    depth_dirs: tuple[str, ...]
    depth_scale: float
    kb_crop: bool


DEPTH_DATASETS = {
    "nyu": _Layout({"train": "nyu_train.txt", "test": "nyu_test.txt"}, "", ("",), 1000.0, False),
    "kitti": _Layout({"train": "kitti_eigen_train.txt", "test": "kitti_eigen_test.txt"}, "input",
                     ("data_depth_annotated", "data_depth_annotated/train", "data_depth_annotated/val"), 256.0, True),
}


def read_split_file(path: Path) -> list[tuple[str, str]]:
    """(image, depth) relative paths of a split file, `None` depths skipped, sorted by image (the toolbox's order)."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found; put the Eigen split file there (BTS / the depth toolbox "
                        f"ship it) or run `bench data mini --root DIR` for the miniatures")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected '<image> <depth> [focal]', got {line!r}")
        if parts[1] != "None":
            pairs.append((parts[0].lstrip("/\\"), parts[1].lstrip("/\\")))
    if not pairs:
        raise DataError(f"{path}: no image with a depth map listed")
    return sorted(pairs)


def _inside(root: Path, rel: str) -> Path:
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise DataError(f"{root}: split file names {rel!r}, outside the dataset folder")
    return p


def _kb(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    top, left = int(h - 352), int((w - 1216) / 2)
    if top < 0 or left < 0:
        raise DataError(f"KITTI image of {h}×{w} is smaller than the 352×1216 KB crop")
    return a[top:top + 352, left:left + 1216]


class DepthImages(Dataset):
    """(normalised image tensor, index); `depth(i)` the ground truth in metres (0 = no measurement)."""

    def __init__(self, name: str, root: Path, split: str, transform=None):
        lay = DEPTH_DATASETS[name]
        self.name, self.split, self.layout, self.transform = name, split, lay, transform
        pairs = read_split_file(root / lay.split_files[split])
        self.images = [_inside(root / lay.image_dir, img) for img, _ in pairs]
        self.depths = [self._find_depth(root, d) for _, d in pairs]
        for p in self.images[:1] + self.images[-1:]:
            if not p.is_file():
                raise DataError(f"{p}: image listed in {lay.split_files[split]} not found; extract the images "
                                f"under {root / lay.image_dir}")

    def _find_depth(self, root: Path, rel: str) -> Path:
        cands = [_inside(root / d, rel) for d in self.layout.depth_dirs]
        for c in cands:
            if c.is_file():
                return c
        return cands[0]

    def __len__(self) -> int:
        return len(self.images)

    def rgb(self, i: int) -> np.ndarray:
        img = np.array(load_rgb(self.images[i]))
        return _kb(img) if self.layout.kb_crop else img

    def depth(self, i: int) -> np.ndarray:
        from PIL import Image
        p = self.depths[i]
        if not p.is_file():
            raise DataError(f"{p}: depth map not found; extract the ground truth ({'data_depth_annotated' if self.layout.kb_crop else 'sync depth PNGs'}) there")
        with Image.open(p) as im:
            d = np.asarray(im, dtype=np.float32) / self.layout.depth_scale
        return _kb(d) if self.layout.kb_crop else d

    def __getitem__(self, i: int):
        img = self.rgb(i)
        return (self.transform(img) if self.transform else img), i

    def __repr__(self) -> str:
        return f"DepthImages({self.name}/{self.split}, {len(self)} images)"


for _name, _folder, _manifest in (("nyu", "nyu", {"test": 654}), ("kitti", "kitti", {"test": 652})):
    register_dataset(DatasetSpec(name=_name, folder=_folder, splits=("train", "test"),
                                 open=lambda root, split, tf, n=_name: DepthImages(n, root, split, tf),
                                 manifest=_manifest))
