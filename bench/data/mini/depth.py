"""`nyu` and `kitti` miniatures: scenes of handwritten digits whose depth is their digit.

Each scene pastes a few of scikit-learn's handwritten digits (random instance, colour and size) over a random
background; a digit's pixels lie at a depth set by its class (NYU: 1 + 0.8·class m, KITTI: 5 + 7·class m), the
background on a plane receding towards the top of the image. Colour says nothing about depth, so a backbone that
recognises digits predicts depth where a random one cannot (the validity pin). Written in the real layouts: NYU
sync folders with `nyu_{train,test}.txt` and uint16 millimetre PNGs at 480×640; KITTI raw images under `input/`
and `data_depth_annotated/` uint16 (÷256 m) maps at 375×1242 with lidar-like sparsity, Eigen split files.
`digit_sprites` is shared with the DAVIS and SPair miniatures.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from ..._io import atomic_write_bytes, atomic_write_text
from . import register_mini

__all__ = ["digit_sprite", "background", "save_jpg", "save_png"]


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images, d.target


def digit_sprite(rng: np.random.Generator, digit: int, size: int, instance: int | None = None) -> np.ndarray:
    """size×size alpha in [0, 1] of one handwritten `digit` (a random instance unless `instance` is given)."""
    from PIL import Image
    images, target = _digits()
    choices = np.flatnonzero(target == digit)
    pick = choices[instance % len(choices)] if instance is not None else rng.choice(choices)
    img = Image.fromarray((images[pick] / 16 * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """h×w×3 float image: a random two-colour gradient, noise and a few thin strokes (no object-like shapes)."""
    a, b = rng.integers(0, 200, (2, 3))
    t = np.linspace(0, 1, w)[None, :, None]
    img = a * (1 - t) + b * t + rng.normal(0, 10, (h, w, 3))
    for _ in range(int(rng.integers(2, 6))):
        y = int(rng.integers(0, h))
        img[y:y + int(rng.integers(1, 4)), :] = rng.integers(0, 256, 3)
    return img


def save_jpg(path: Path, img: np.ndarray) -> None:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=92)
    atomic_write_bytes(path, buf.getvalue())


def save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _scene(rng, h: int, w: int, depth_of, plane: tuple[float, float], n_digits: int, size: tuple[int, int]):
    img = background(rng, h, w)
    rows = np.linspace(plane[1], plane[0], h, dtype=np.float32)[:, None]   # far at the top, near at the bottom
    depth = np.broadcast_to(rows, (h, w)).copy()
    for _ in range(n_digits):
        digit = int(rng.integers(0, 10))
        s = int(rng.integers(*size))
        y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
        alpha = digit_sprite(rng, digit, s)[..., None]
        colour = rng.integers(120, 256, 3)
        img[y:y + s, x:x + s] = img[y:y + s, x:x + s] * (1 - alpha) + colour * alpha
        depth[y:y + s, x:x + s][alpha[..., 0] > 0.5] = depth_of(digit)
    return img, depth


def write_nyu(root: Path, n_train: int = 24, n_test: int = 8, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    for split, n, scene in (("train", n_train, "living_room_{:04d}a"), ("test", n_test, "bathroom_{:04d}")):
        lines = []
        for i in range(n):
            folder = scene.format(i // 4)
            img, depth = _scene(rng, 480, 640, lambda c: 1.0 + 0.8 * c, (3.0, 9.5), 4, (96, 176))
            depth[rng.random(depth.shape) < 0.05] = 0                            # Kinect holes
            save_jpg(root / folder / f"rgb_{i:05d}.jpg", img)
            save_png(root / folder / f"sync_depth_{i:05d}.png", np.round(depth * 1000).astype(np.uint16))
            lines.append(f"/{folder}/rgb_{i:05d}.jpg /{folder}/sync_depth_{i:05d}.png 518.8579\n")
        atomic_write_text(root / f"nyu_{split}.txt", "".join(lines))


def write_kitti(root: Path, n_train: int = 8, n_test: int = 4, seed: int = 12) -> None:
    rng = np.random.default_rng(seed)
    for split, n, drive in (("train", n_train, "2011_09_26_drive_0001_sync"),
                            ("test", n_test, "2011_09_26_drive_0002_sync")):
        lines = []
        for i in range(n):
            img, depth = _scene(rng, 375, 1242, lambda c: 5.0 + 7.0 * c, (15.0, 75.0), 6, (110, 200))
            depth[rng.random(depth.shape) < 0.85] = 0                            # sparse projected lidar
            depth[:120] = 0                                                      # no returns from the sky
            image_rel = f"2011_09_26/{drive}/image_02/data/{i:010d}.png"
            depth_rel = f"{drive}/proj_depth/groundtruth/image_02/{i:010d}.png"
            from PIL import Image
            buf = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
            atomic_write_bytes(root / "input" / image_rel, buf.getvalue())
            sub = "train" if split == "train" else "val"
            save_png(root / "data_depth_annotated" / sub / depth_rel, np.round(depth * 256).astype(np.uint16))
            lines.append(f"{image_rel} {depth_rel} 721.5377\n")
        atomic_write_text(root / f"kitti_eigen_{split}.txt", "".join(lines))


register_mini("nyu", write_nyu)
register_mini("kitti", write_kitti)
