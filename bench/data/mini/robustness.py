"""Robustness miniatures in the releases' layouts, from the held-out (val) digits of the imagenet/ miniature.

- imagenet-a/, imagenet-r/: <wnid>/ folders of a SUBSET of the 10 classes (5 and 6 of them), so the logit
  restriction to the set's classes is exercised (the real sets hold 200 of the 1000); fresh renderings
  (ImageNet-R's: colour-inverted "renditions").
- imagenet-sketch/: all 10 <wnid>/ folders, grey-scale renderings.
- imagenetv2-matched-frequency-format-val/: folders 0…9 = class index.
- imagenet-c/<corruption>/<1-5>/<wnid>/: the miniature's own val images, resized and centre-cropped as the
  evaluation does (short side 73, crop 64: 256/224 at 64 px, as make_imagenet_c.py's Resize(256)+CenterCrop(224)),
  then corrupted at the 5 severities of hendrycks/robustness ImageNet-C/create_c/make_imagenet_c.py with numpy/PIL
  re-implementations of 5 of the 15 corruptions, saved as JPEG quality 85 (as that script saves).
- imagenet-p/<perturbation>/<wnid>/<video>/: 6-frame sequences (frame folders, PNG) of gaussian_noise (fresh noise
  per frame), brightness (rising) and translate (1 px per frame).
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from . import register_mini
from .imagenet import MINI_IMAGENET_WNIDS

__all__ = ["CORRUPT", "write_imagenet_c_mini", "write_imagenet_p_mini", "write_imagenetv2_mini"]

CROP, RESIZE = 64, 73


@functools.lru_cache(maxsize=1)
def _val_images() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(every rendering of imagenet/, labels, val indices): the same images imagenet/ writes (same seed/order)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from .transfer import render_digit
    digits = load_digits()
    rng = np.random.RandomState(2012)
    images = [render_digit(g, rng) for g in digits.images]
    _, val_idx = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0, stratify=digits.target)
    return images, digits.target, np.sort(val_idx)


def _per_class(labels, ids, n: int) -> dict[int, list[int]]:
    return {c: [i for i in ids if labels[i] == c][:n] for c in range(10)}


def _save(img, path: Path, **kw) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    (img if isinstance(img, Image.Image) else Image.fromarray(np.uint8(np.clip(img, 0, 255)))).save(path, **kw)


def _eval_size(img: np.ndarray):
    from PIL import Image
    im = Image.fromarray(img).resize((RESIZE, RESIZE), Image.BILINEAR)
    o = (RESIZE - CROP) // 2
    return im.crop((o, o, o + CROP, o + CROP))


# make_imagenet_c.py's severities; the functions follow its definitions on [0, 1] images
def _gaussian_noise(x, s, rng):
    c = [.08, .12, 0.18, 0.26, 0.38][s - 1]
    return np.clip(np.asarray(x) / 255. + rng.normal(size=np.asarray(x).shape, scale=c), 0, 1) * 255


def _contrast(x, s, rng):
    c = [0.4, .3, .2, .1, .05][s - 1]
    x = np.asarray(x) / 255.
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _brightness(x, s, rng, c=None):
    c = [.1, .2, .3, .4, .5][s - 1] if c is None else c
    x = np.asarray(x) / 255.
    v = x.max(axis=2, keepdims=True)   # HSV value; +c on V with H, S kept scales RGB by (V+c)/V
    v_new = np.clip(v + c, 0, 1)
    out = np.where(v > 0, x * v_new / np.maximum(v, 1e-12), v_new)
    return np.clip(out, 0, 1) * 255


def _jpeg_compression(x, s, rng):
    from PIL import Image
    buf = io.BytesIO()
    x.save(buf, "JPEG", quality=[25, 18, 15, 10, 7][s - 1])
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _pixelate(x, s, rng):
    from PIL import Image
    c = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
    return x.resize((int(CROP * c), int(CROP * c)), Image.BOX).resize((CROP, CROP), Image.BOX)


CORRUPT = {"gaussian_noise": _gaussian_noise, "contrast": _contrast, "brightness": _brightness,
           "jpeg_compression": _jpeg_compression, "pixelate": _pixelate}


def _restyle(glyph_ids, labels, seed: int, style) -> list[tuple[int, np.ndarray]]:
    from sklearn.datasets import load_digits

    from .transfer import render_digit
    glyphs = load_digits().images
    rng = np.random.RandomState(seed)
    return [(labels[i], style(render_digit(glyphs[i], rng))) for i in glyph_ids]


_SETS = {"imagenet-a": ((1, 3, 5, 7, 9), 8, 11, lambda im: im),
         "imagenet-r": ((0, 2, 4, 6, 8, 9), 8, 12, lambda im: 255 - im),
         "imagenet-sketch": (tuple(range(10)), 5, 13, lambda im: np.repeat(im.mean(axis=2, keepdims=True), 3, 2))}


def _write_set(name: str, root: Path) -> None:
    images, labels, val_ids = _val_images()
    classes, n, seed, style = _SETS[name]
    by_class = _per_class(labels, val_ids, 8)
    ids = [i for c in classes for i in by_class[c][:n]]
    for k, (label, img) in enumerate(_restyle(ids, labels, seed, style)):
        wnid = MINI_IMAGENET_WNIDS[label]
        _save(img, root / wnid / f"{wnid}_{k}.JPEG", format="JPEG", quality=95)


for _name in _SETS:
    register_mini(_name, functools.partial(_write_set, _name))


@register_mini("imagenetv2-matched-frequency-format-val")
def write_imagenetv2_mini(root: Path) -> None:
    images, labels, val_ids = _val_images()
    by_class = _per_class(labels, val_ids, 8)
    ids = [i for c in range(10) for i in by_class[c][:5]]
    for k, (label, img) in enumerate(_restyle(ids, labels, 14, lambda im: im)):
        _save(img, root / str(label) / f"{k}.jpeg", format="JPEG", quality=95)


@register_mini("imagenet-c")
def write_imagenet_c_mini(root: Path) -> None:
    images, labels, val_ids = _val_images()
    _write_c(root, images, labels, _per_class(labels, val_ids, 8))


@register_mini("imagenet-p")
def write_imagenet_p_mini(root: Path) -> None:
    images, labels, val_ids = _val_images()
    _write_p(root, images, labels, _per_class(labels, val_ids, 8))


def _write_c(root: Path, images, labels, by_class) -> None:
    ids = [i for c in range(10) for i in by_class[c][:2]]
    rng = np.random.RandomState(2019)
    for name, fn in CORRUPT.items():
        for s in range(1, 6):
            for i in ids:
                wnid = MINI_IMAGENET_WNIDS[labels[i]]
                out = fn(_eval_size(images[i]), s, rng)
                _save(out, root / name / str(s) / wnid / f"{wnid}_{i}.JPEG", format="JPEG", quality=85)


def _write_p(root: Path, images, labels, by_class, frames: int = 6) -> None:
    from PIL import Image
    rng = np.random.RandomState(2018)
    ids = [by_class[c][0] for c in range(10)]
    for i in ids:
        wnid = MINI_IMAGENET_WNIDS[labels[i]]
        x = _eval_size(images[i])
        big = Image.fromarray(images[i]).resize((RESIZE + frames, RESIZE + frames), Image.BILINEAR)
        seqs = {"gaussian_noise": [_gaussian_noise(x, 2, rng) for _ in range(frames)],
                "brightness": [_brightness(x, 1, rng, c=0.06 * j) for j in range(frames)],
                "translate": [big.crop((j, 0, j + CROP, CROP)) for j in range(frames)]}
        for p, seq in seqs.items():
            for j, frame in enumerate(seq):
                _save(frame, root / p / wnid / f"{wnid}_{i}" / f"{j:03d}.png", format="PNG")
