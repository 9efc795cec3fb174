"""`SPair-71k` miniature: pairs of photographs of the same handwritten digit with corresponding keypoints.

Three categories (digits 2, 5, 7). A category's images paste one of two instances of its digit at a random
position, scale and colour over a random background; its keypoints are five fixed points on the sprite (the
brightest pixels of the category's mean digit, spread apart), mapped into each image, so a pair's keypoints
correspond. Written in SPair-71k's layout: JPEGImages/<category>/*.jpg and PairAnnotation/test/*.json with the
fields DIFT reads (src/trg_imname, src/trg_kps, trg_bndbox, trg_imsize, category).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..._io import atomic_write_text
from . import register_mini
from .depth import _digits, background, digit_sprite, save_jpg

__all__ = ["write_spair"]

CATEGORIES = {"two": 2, "five": 5, "seven": 7}
SIDE, N_IMAGES, N_PAIRS = 128, 6, 8


def _keypoints(digit: int, k: int = 5) -> np.ndarray:
    """k sprite-relative (x, y) in [0, 1]: bright pixels of the class-mean digit, greedily spread apart."""
    images, target = _digits()
    mean = images[target == digit].mean(0)
    ys, xs = np.nonzero(mean > 0.5 * mean.max())
    pts = np.stack([xs, ys], 1).astype(float)
    chosen = [pts[np.argmax(mean[ys, xs])]]
    while len(chosen) < k:
        d = np.min([np.linalg.norm(pts - c, axis=1) for c in chosen], axis=0)
        chosen.append(pts[np.argmax(d)])
    return (np.array(chosen) + 0.5) / 8


def write_spair(root: Path, seed: int = 14) -> None:
    rng = np.random.default_rng(seed)
    pair_id = 0
    for cat, digit in CATEGORIES.items():
        kps_rel = _keypoints(digit)
        meta = []
        for i in range(N_IMAGES):
            s = int(rng.integers(56, 96))
            sprite = digit_sprite(rng, digit, s, instance=int(rng.integers(0, 2)))
            img = background(rng, SIDE, SIDE)
            y, x = (int(v) for v in rng.integers(0, SIDE - s, 2))
            a = sprite[..., None]
            img[y:y + s, x:x + s] = img[y:y + s, x:x + s] * (1 - a) + rng.integers(120, 256, 3) * a
            name = f"{i:04d}_{cat}.jpg"
            save_jpg(root / "JPEGImages" / cat / name, img)
            kps = np.round(kps_rel * s + [x, y]).astype(int).clip(0, SIDE - 1)
            meta.append((name, kps.tolist(), [x, y, x + s, y + s]))
        for _ in range(N_PAIRS):
            a, b = rng.choice(N_IMAGES, 2, replace=False)
            src, trg = meta[a], meta[b]
            d = {"category": cat, "src_imname": src[0], "trg_imname": trg[0], "src_kps": src[1], "trg_kps": trg[1],
                 "src_bndbox": src[2], "trg_bndbox": trg[2], "src_imsize": [SIDE, SIDE, 3],
                 "trg_imsize": [SIDE, SIDE, 3]}
            pair_id += 1
            stem = f"{pair_id:06d}-{src[0][:-4]}-{trg[0][:-4]}:{cat}"
            atomic_write_text(root / "PairAnnotation" / "test" / f"{stem}.json", json.dumps(d))


register_mini("SPair-71k", write_spair)
