"""`DAVIS` miniature: short videos of handwritten digits drifting over a cluttered background.

Each sequence holds two or three digits (distinct classes, the same colour, so colour alone cannot tell them
apart) moving on straight paths that cross, over a static gradient background with strokes; annotated with
their object ids 1..K in palette PNGs on every frame, in DAVIS-2017's layout (ImageSets/2017/val.txt,
JPEGImages/480p, Annotations/480p). Frames are 240×320 so the CPU tests stay fast.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..._io import atomic_write_bytes, atomic_write_text
from . import register_mini
from .depth import background, digit_sprite, save_jpg

__all__ = ["write_davis", "PALETTE"]

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 251)
H, W, N_FRAMES, SIZE = 240, 320, 10, 80


def _palette_png(path: Path, ids: np.ndarray) -> None:
    from PIL import Image
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_davis(root: Path, n_seq: int = 3, seed: int = 13) -> None:
    rng = np.random.default_rng(seed)
    names = []
    for s in range(n_seq):
        name = f"digits-{s:02d}"
        names.append(name)
        bg = background(rng, H, W)
        k = 2 + s % 2
        digits = rng.choice(10, size=k, replace=False)
        sprites = [digit_sprite(rng, int(d), SIZE) for d in digits]
        colour = rng.integers(150, 256, 3)
        start = rng.uniform([0, 0], [H - SIZE, W - SIZE], (k, 2))
        end = rng.uniform([0, 0], [H - SIZE, W - SIZE], (k, 2))
        for t in range(N_FRAMES):
            img, ids = bg.copy(), np.zeros((H, W), np.uint8)
            for o in range(k):
                y, x = (start[o] + (end[o] - start[o]) * t / (N_FRAMES - 1)).astype(int)
                a = sprites[o][..., None]
                img[y:y + SIZE, x:x + SIZE] = img[y:y + SIZE, x:x + SIZE] * (1 - a) + colour * a
                ids[y:y + SIZE, x:x + SIZE][a[..., 0] > 0.5] = o + 1      # later objects occlude earlier ones
            save_jpg(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", img)
            _palette_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", ids)
    atomic_write_text(root / "ImageSets" / "2017" / "val.txt", "".join(f"{n}\n" for n in names))
    atomic_write_text(root / "ImageSets" / "2017" / "train.txt", "")


register_mini("DAVIS", write_davis)
