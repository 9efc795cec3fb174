"""coco/ miniature: procedural scenes in COCO's layout (annotations/instances_{train,val}2017.json, {train,val}2017/).

Each 128 × 96 or 96 × 128 JPEG shows 1–4 handwritten digits (scikit-learn's) on a striped, noisy background, as
the VOC miniature: the digit decides the category (a "1" is a COCO "bottle", id 44; a "4" a "tv", id 72; a "7" a
"potted plant", id 64: real COCO ids with gaps, so the id ↔ label mapping is exercised) and its colour is random,
so only shape tells them apart. Instance masks are the digit's stroke pixels, stored as polygons (the outline of
each connected stroke, as COCO stores iscrowd=0 objects) for odd annotation ids and as uncompressed RLE (as COCO
stores crowd regions) for even ones; boxes are the masks' tight boxes in COCO's [x, y, w, h]; areas the mask
areas. One val image also carries a crowd region (iscrowd=1), which COCOeval ignores when matching. Written
with numpy alone (pycocotools is only needed to run the protocol). train2017 holds 40 images, val2017 20, with
COCO's 12-digit file names. Fixed seed: the same files every time, written in about a second.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from . import register_mini
from .VOCdevkit import _background

__all__ = ["write_coco_mini", "MINI_COCO_CATEGORIES"]

MINI_COCO_CATEGORIES = ({"id": 44, "name": "bottle", "supercategory": "kitchen"},
                        {"id": 64, "name": "potted plant", "supercategory": "furniture"},
                        {"id": 72, "name": "tv", "supercategory": "electronic"})
_DIGITS = {44: 1, 72: 4, 64: 7}
COUNTS = {"train2017": 40, "val2017": 20}


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    return load_digits()


def _glyph_mask(rng: np.random.Generator, digit: int, bw: int, bh: int) -> np.ndarray:
    from PIL import Image
    digits = _digits()
    pick = rng.choice(np.flatnonzero(digits.target == digit))
    glyph = Image.fromarray((digits.images[pick] / 16 * 255).astype(np.uint8)).resize((bw, bh), Image.BICUBIC)
    return np.asarray(glyph) > 110


def _polygons(mask: np.ndarray) -> tuple[list[list[float]], np.ndarray]:
    """One outline polygon per 4-connected component: down its rows' right ends, back up their left ends (pixel
    corners), so a row's gaps inside the component are filled; and the pixels those polygons cover (row y from
    its left to its right end: pycocotools' rasterisation of these outlines, which the tests check)."""
    from scipy import ndimage
    polys, filled = [], np.zeros_like(mask)
    labels, n = ndimage.label(mask)
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        rows = np.unique(ys)            # contiguous: a 4-connected component has no empty row inside it
        left = [int(xs[ys == y].min()) for y in rows]
        right = [int(xs[ys == y].max()) + 1 for y in rows]
        down = [c for y, r in zip(rows, right) for c in (r, int(y), r, int(y) + 1)]
        up = [c for y, lft in zip(rows[::-1], left[::-1]) for c in (lft, int(y) + 1, lft, int(y))]
        polys.append([float(c) for c in down + up])
        for y, lft, r in zip(rows, left, right):
            filled[y, lft:r] = True
    return polys, filled


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed RLE as COCO's json stores it: column-major run lengths, starting with a run of zeros."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    counts = ([0] if flat[0] else []) + [int(r) for r in runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def _scene(rng: np.random.Generator, img_id: int, split: str, folder: Path, next_ann: list[int],
           crowd: bool) -> tuple[dict, list[dict]]:
    from PIL import Image
    w, h = (128, 96) if rng.random() < 0.5 else (96, 128)
    img = _background(rng, h, w)
    taken = np.zeros((h, w), bool)
    anns = []
    for _ in range(int(rng.integers(1, 5))):
        cat = MINI_COCO_CATEGORIES[int(rng.integers(len(MINI_COCO_CATEGORIES)))]["id"]
        size = int(rng.choice([rng.integers(10, 16), rng.integers(20, 40), rng.integers(56, 80)],
                              p=[0.2, 0.5, 0.3]))
        bw, bh = (size // 2 + 3, size) if cat == 44 else (size, size)
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        if taken[max(y1 - 2, 0):y1 + bh + 2, max(x1 - 2, 0):x1 + bw + 2].any():
            continue
        full = np.zeros((h, w), bool)
        full[y1:y1 + bh, x1:x1 + bw] = _glyph_mask(rng, _DIGITS[cat], bw, bh)
        if full.sum() < 12:
            continue
        taken[y1:y1 + bh, x1:x1 + bw] = True
        aid = next_ann[0]
        next_ann[0] += 1
        if aid % 2:
            segmentation, full = _polygons(full)           # the pixels painted are the annotation's
        else:
            segmentation = _rle(full)
        img[full] = rng.integers(0, 256, 3)
        anns.append({"id": aid, "image_id": img_id, "category_id": cat, "segmentation": segmentation,
                     "area": float(full.sum()), "bbox": _box(full), "iscrowd": 0})
    if crowd:   # a crowd region of small bottles in a free corner: COCOeval ignores detections matching it
        region = np.zeros((h, w), bool)
        region[h - 20:h - 2, 2:40] = True
        if not taken[region].any():
            for x in range(4, 36, 8):
                region_digit = np.zeros((h, w), bool)
                region_digit[h - 18:h - 4, x:x + 6] = _glyph_mask(rng, 1, 6, 14)
                img[region_digit] = rng.integers(0, 256, 3)
            aid = next_ann[0]
            next_ann[0] += 1
            anns.append({"id": aid, "image_id": img_id, "category_id": 44, "iscrowd": 1, "segmentation": _rle(region),
                         "area": float(region.sum()), "bbox": _box(region)})
    name = f"{img_id:012d}.jpg"
    Image.fromarray(img).save(folder / split / name, format="JPEG", quality=95)
    return {"id": img_id, "file_name": name, "height": h, "width": w}, anns


@register_mini("coco")
def write_coco_mini(root: Path) -> None:
    rng = np.random.default_rng(2017)
    (root / "annotations").mkdir(parents=True)
    next_ann, img_id = [1], 9
    for split, n in COUNTS.items():
        (root / split).mkdir()
        images, annotations = [], []
        for i in range(n):
            img_id += int(rng.integers(1, 40))     # sparse ids, as COCO's
            info, anns = _scene(rng, img_id, split, root, next_ann, crowd=split == "val2017" and i == 3)
            images.append(info)
            annotations += anns
        data = {"info": {"description": "bench COCO miniature", "year": 2017}, "licenses": [],
                "images": images, "annotations": annotations, "categories": list(MINI_COCO_CATEGORIES)}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
