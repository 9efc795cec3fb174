"""VOCdevkit/ miniature: procedural scenes in the devkit's layout, so the real VOC reader and evaluator run.

Each 128 × 96 or 96 × 128 JPEG shows 1–3 handwritten digits (scikit-learn's) on a striped, noisy background. The
digit decides the class (three of the 20 VOC names stand in: a "1" in a tall box is a "bottle", a "4" a
"tvmonitor", a "7" a "pottedplant") and its colour is random, so only shape tells the classes apart: features
that know shapes detect them, random ones barely do (the validity tests check the ranking). Boxes are the shapes' tight
1-based inclusive pixel boxes in real VOC XML; shapes smaller than 14 px are marked `difficult` (as the devkit marks
hard-to-recognise objects). VOC2007 gets trainval (40) and test (30) lists, VOC2012 trainval (20), as the real
devkit (2012 has no public test annotations). VOC2012 also gets `SegmentationClass` palette PNGs (class indices,
255 on the glyphs' soft edges as the devkit's void border) with `ImageSets/Segmentation/{train,val}.txt` (40 / 20:
the 20 trainval scenes and 40 segmentation-only ones), and `selective_search_data/voc_<year>_<set>.mat` holds
stand-in proposals in Fast R-CNN's published layout (jittered object boxes plus random boxes; the real files come
from selective search). These later additions draw from their own generators, so the earlier files are unchanged.
Fixed seeds: the same files every time, written in a few seconds.
"""
from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import register_mini

__all__ = ["write_voc_mini", "MINI_VOC_CLASSES"]

MINI_VOC_CLASSES = ("bottle", "tvmonitor", "pottedplant")
_DIGITS = {"bottle": 1, "tvmonitor": 4, "pottedplant": 7}
_SETS = {("2007", "trainval"): 40, ("2007", "test"): 30, ("2012", "trainval"): 20}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    period, angle = rng.uniform(6, 20), rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)[..., None]
    base = rng.uniform(90, 170, size=3)
    img = base + 25 * stripes * rng.uniform(0.5, 1, size=3) + rng.normal(0, 12, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits
    return load_digits()


def _draw(img, rng: np.random.Generator, cls: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """Paste a random instance of the class's digit, in a random bright colour, filling the box; its alpha."""
    from PIL import Image
    digits = _digits()
    x1, y1, x2, y2 = box   # 0-based inclusive pixels
    pick = rng.choice(np.flatnonzero(digits.target == _DIGITS[cls]))
    glyph = Image.fromarray((digits.images[pick] / 16 * 255).astype(np.uint8))
    alpha = glyph.resize((x2 - x1 + 1, y2 - y1 + 1), Image.BICUBIC)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    img.paste(Image.new("RGB", alpha.size, colour), (x1, y1), alpha)
    return np.asarray(alpha)


def _place(rng: np.random.Generator, cls: str, w: int, h: int, taken: list) -> tuple[int, int, int, int] | None:
    for _ in range(20):
        size = int(rng.choice([rng.integers(9, 14), rng.integers(18, 44)], p=[0.15, 0.85]))
        bw, bh = (size // 2 + 2, size) if cls == "bottle" else (size, size)
        x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        box = (x1, y1, x1 + bw - 1, y1 + bh - 1)
        if all(box[2] < t[0] - 2 or box[0] > t[2] + 2 or box[3] < t[1] - 2 or box[1] > t[3] + 2 for t in taken):
            return box
    return None


def _xml(name: str, year: str, w: int, h: int, objects: list[tuple[str, tuple, bool]]) -> bytes:
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = f"VOC{year}"
    ET.SubElement(ann, "filename").text = f"{name}.jpg"
    size = ET.SubElement(ann, "size")
    for tag, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(ann, "segmented").text = "0"
    for cls, (x1, y1, x2, y2), difficult in objects:
        o = ET.SubElement(ann, "object")
        for tag, v in (("name", cls), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", int(difficult))):
            ET.SubElement(o, tag).text = str(v)
        bb = ET.SubElement(o, "bndbox")
        for tag, v in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2 + 1), ("ymax", y2 + 1)):  # 1-based
            ET.SubElement(bb, tag).text = str(v)
    return ET.tostring(ann)


def _scene(rng: np.random.Generator, name: str, year: str, folder: Path) -> tuple[list, np.ndarray]:
    """Write one scene's JPEG and XML; (objects, class map) where the class map holds VOC's 21-class indices,
    255 on the glyphs' soft edges (the devkit's `void` border)."""
    from PIL import Image
    from ...data.voc import VOC_CLASSES
    w, h = (128, 96) if rng.random() < 0.5 else (96, 128)
    img = Image.fromarray(_background(rng, h, w))
    objects: list = []
    seg = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = MINI_VOC_CLASSES[int(rng.integers(len(MINI_VOC_CLASSES)))]
        box = _place(rng, cls, w, h, [o[1] for o in objects])
        if box is None:
            continue
        alpha = _draw(img, rng, cls, box)
        x1, y1, x2, y2 = box
        view = seg[y1:y2 + 1, x1:x2 + 1]
        view[alpha >= 32] = 255
        view[alpha >= 128] = VOC_CLASSES.index(cls) + 1
        objects.append((cls, box, min(box[2] - box[0], box[3] - box[1]) + 1 < 14))
    img.save(folder / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=95)
    (folder / "Annotations" / f"{name}.xml").write_bytes(_xml(name, year, w, h, objects))
    return objects, seg


def _voc_palette() -> list[int]:
    """The devkit's colour map (VOCdevkit/VOCcode/VOClabelcolormap.m): bit-interleaved RGB per label."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _write_class_png(path: Path, seg: np.ndarray) -> None:
    from PIL import Image
    im = Image.fromarray(seg, mode="P")
    im.putpalette(_voc_palette())
    im.save(path)


def _proposals(rng: np.random.Generator, objects: list, w: int, h: int, n_random: int = 40) -> np.ndarray:
    """Stand-in selective-search boxes for one image: 8 jitters of each object box plus random boxes, in the
    published file's 1-based [y1 x1 y2 x2] (the real files come from selective search; none is shipped here)."""
    boxes = []
    for _, (x1, y1, x2, y2), _ in objects:
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        for _ in range(8):
            dx1, dx2 = rng.normal(0, 0.15 * bw, 2)
            dy1, dy2 = rng.normal(0, 0.15 * bh, 2)
            boxes.append([y1 + dy1, x1 + dx1, y2 + dy2, x2 + dx2])
    for _ in range(n_random):
        x = np.sort(rng.uniform(0, w - 1, 2))
        y = np.sort(rng.uniform(0, h - 1, 2))
        boxes.append([y[0], x[0], y[1], x[1]])
    b = np.round(np.asarray(boxes))
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, h - 1)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, w - 1)
    b[:, 2] = np.maximum(b[:, 2], b[:, 0] + 1)
    b[:, 3] = np.maximum(b[:, 3], b[:, 1] + 1)
    return (np.minimum(b, [h - 1, w - 1, h - 1, w - 1]) + 1).astype(np.float64)


def _write_proposals(path: Path, names: list[str], boxes: list[np.ndarray]) -> None:
    """Fast R-CNN's selective_search_data/<imdb>.mat: `boxes` and `images`, 1 × N cell arrays in image-set order."""
    from scipy.io import savemat
    cells = np.empty((1, len(boxes)), dtype=object)
    ids = np.empty((1, len(names)), dtype=object)
    for i, (n, b) in enumerate(zip(names, boxes)):
        cells[0, i], ids[0, i] = b, n
    savemat(path, {"boxes": cells, "images": ids})


_SEG_EXTRA = 40   # VOC2012 images that only the segmentation lists name: half train, half val


@register_mini("VOCdevkit")
def write_voc_mini(root: Path) -> None:
    rng = np.random.default_rng(2007)
    # later additions draw from their own generators, so the files above stay byte-identical
    prop_rng, seg_rng = np.random.default_rng(1501), np.random.default_rng(2012)
    (root / "selective_search_data").mkdir(parents=True, exist_ok=True)
    segs: dict[str, np.ndarray] = {}
    for year in ("2007", "2012"):
        folder = root / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        start = 0
        for (y, image_set), count in _SETS.items():
            if y != year:
                continue
            names = [f"{year}_{i:06d}" for i in range(start, start + count)]
            start += count
            props = []
            for name in names:
                objects, seg = _scene(rng, name, year, folder)
                segs[name] = seg
                props.append(_proposals(prop_rng, objects, seg.shape[1], seg.shape[0]))
            _write_proposals(root / "selective_search_data" / f"voc_{year}_{image_set}.mat", names, props)
            (folder / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(names) + "\n")
            if image_set == "trainval":   # as the devkit: trainval is train then val (the transfer split)
                half = len(names) // 2
                for part, subset in (("train", names[:half]), ("val", names[half:])):
                    (folder / "ImageSets" / "Main" / f"{part}.txt").write_text("\n".join(subset) + "\n")
    _write_segmentation(root / "VOC2012", seg_rng, [n for n in segs if n.startswith("2012")], segs)


def _write_segmentation(folder: Path, rng: np.random.Generator, trainval: list[str], segs: dict) -> None:
    """VOC2012 SegmentationClass PNGs (palette, 0 background, 1..20, 255 void) + ImageSets/Segmentation lists:
    train = the 20 trainval scenes + 20 more, val = 20 more."""
    (folder / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    (folder / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    extra = [f"2012_{i:06d}" for i in range(100, 100 + _SEG_EXTRA)]
    for name in extra:
        segs[name] = _scene(rng, name, "2012", folder)[1]
    for name in trainval + extra:
        _write_class_png(folder / "SegmentationClass" / f"{name}.png", segs[name])
    half = _SEG_EXTRA // 2
    for part, subset in (("train", trainval + extra[:half]), ("val", extra[half:])):
        (folder / "ImageSets" / "Segmentation" / f"{part}.txt").write_text("\n".join(subset) + "\n")
