"""roxford5k / rparis6k / oxford5k / paris6k miniatures: procedural "landmarks" photographed several times.

Each landmark is one handwritten digit (scikit-learn's digits; a different digit per landmark, one fixed
instance and colour) on a transparent canvas.
A "photograph" pastes it over a random background (gradient + clutter shapes) with a random shift, scale and
colour jitter. Views are drawn at three difficulties, which become the ground truth:
- easy: large, fully visible;  hard: small, dimmed, partly covered;  junk: a sliver at the image border.
Distractor photographs hold only background clutter. Queries are separate photographs with the object's bbox.

The revisited folders use revisitop's layout (`jpg/`, `gnd_<name>.pkl` with numpy index arrays); the original
ones use the gt_files layout (queries stay in the database and are listed as good, as in Oxford5k).
Oxford-named miniatures share seed 1, Paris-named ones seed 2, so whitening "on the other dataset" has data.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..._io import atomic_write_bytes, atomic_write_text
from . import register_mini

__all__ = ["write_retrieval_scenes", "N_LANDMARKS"]

N_LANDMARKS, N_EASY, N_HARD, N_JUNK, N_QUERIES, N_DISTRACTORS = 6, 4, 3, 2, 2, 30
SIDE = 96          # long side of every photograph
OBJ = 48           # object canvas side


def _draw_object(rng: np.random.Generator, landmark: int):
    """A landmark: one handwritten digit (a different digit per landmark, a fixed instance and colour) on a
    transparent canvas. Digits give the landmarks the shape structure that trained features capture and random
    ones only partly do, so the protocol can rank backbones (the validity tests check it)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    pick = rng.choice(np.flatnonzero(digits.target == landmark % 10))
    alpha = Image.fromarray((digits.images[pick] / 16 * 255).astype(np.uint8)).resize((OBJ, OBJ), Image.BICUBIC)
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    img = Image.new("RGBA", (OBJ, OBJ), colour + (0,))
    img.putalpha(alpha)
    return img


def _background(rng: np.random.Generator, w: int, h: int):
    from PIL import Image, ImageDraw
    a, b = rng.integers(0, 256, (2, 3))
    t = np.linspace(0, 1, w)[None, :, None]
    arr = (a * (1 - t) + b * t).repeat(h, 0) + rng.normal(0, 12, (h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):   # clutter: thin strokes, never object-like blobs
        pts = [tuple(int(v) for v in rng.integers(0, max(w, h), 2)) for _ in range(2)]
        d.line(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    return img


def _photo(rng: np.random.Generator, obj, kind: str):
    """One photograph of `obj` (None: distractor); returns (image, bbox x1 y1 x2 y2 of the object)."""
    from PIL import ImageEnhance
    w, h = (SIDE, int(SIDE * 0.75)) if rng.random() < 0.5 else (int(SIDE * 0.75), SIDE)
    img = _background(rng, w, h)
    if obj is None:
        return img, None
    scale = {"easy": rng.uniform(1.0, 1.3), "query": rng.uniform(0.9, 1.2), "hard": rng.uniform(0.5, 0.7),
             "junk": rng.uniform(0.9, 1.1)}[kind]
    s = int(OBJ * scale)
    view = obj.resize((s, s))
    rgb = ImageEnhance.Brightness(view.convert("RGB")).enhance(rng.uniform(0.6, 0.8) if kind == "hard"
                                                              else rng.uniform(0.9, 1.1))
    if kind == "junk":   # only a sliver shows: the object hangs over the right or bottom border
        x, y = (w - s // 5, int(rng.integers(0, h - s))) if rng.random() < 0.5 else (int(rng.integers(0, w - s)),
                                                                                     h - s // 5)
    else:
        x, y = int(rng.integers(0, max(w - s, 1))), int(rng.integers(0, max(h - s, 1)))
    img.paste(rgb, (x, y), view.split()[3])
    if kind == "hard":   # an occluding bar across part of the object
        from PIL import ImageDraw
        ImageDraw.Draw(img).rectangle([x, y + s // 3, x + s, y + s // 3 + s // 4], fill=(90, 90, 90))
    return img, [float(x), float(y), float(min(x + s, w)), float(min(y + s, h))]


def _scenes(seed: int, prefix: str):
    """(db photos [(id, image)], queries [(id, image, bbox, landmark)], per-landmark {kind: [db ids]})."""
    rng = np.random.default_rng(seed)
    db, queries, truth = [], [], []
    for lm in range(N_LANDMARKS):
        obj = _draw_object(rng, lm)
        kinds = {}
        for kind, n in (("easy", N_EASY), ("hard", N_HARD), ("junk", N_JUNK)):
            kinds[kind] = []
            for _ in range(n):
                name = f"{prefix}_lm{lm}_{len(db):04d}"
                db.append((name, _photo(rng, obj, kind)[0]))
                kinds[kind].append(name)
        for k in range(N_QUERIES):
            img, bbx = _photo(rng, obj, "query")
            queries.append((f"{prefix}_lm{lm}_query{k}", img, bbx, lm))
        truth.append(kinds)
    for _ in range(N_DISTRACTORS):
        db.append((f"{prefix}_other_{len(db):04d}", _photo(rng, None, "")[0]))
    order = rng.permutation(len(db))   # interleave so database order carries no label information
    return [db[i] for i in order], queries, truth


def _save_jpg(folder: Path, name: str, img) -> None:
    import io
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    atomic_write_bytes(folder / "jpg" / f"{name}.jpg", buf.getvalue())


def write_retrieval_scenes(root: Path, name: str, seed: int, prefix: str) -> None:
    """Write one miniature in revisitop's layout (r* names) or the original gt_files layout."""
    root = Path(root)
    db, queries, truth = _scenes(seed, prefix)
    for img_name, img in db:
        _save_jpg(root, img_name, img)
    for q_name, img, _, _ in queries:
        _save_jpg(root, q_name, img)
    if name.startswith("r"):
        where = {n: i for i, (n, _) in enumerate(db)}
        gnd = [{"bbx": bbx, **{k: np.array([where[n] for n in truth[lm][k]], dtype=np.int64)
                               for k in ("easy", "hard", "junk")}} for _, _, bbx, lm in queries]
        obj = {"imlist": [n for n, _ in db], "qimlist": [q for q, *_ in queries], "gnd": gnd}
        atomic_write_bytes(root / f"gnd_{name}.pkl", pickle.dumps(obj, protocol=4))
        return
    # Original layout: queries are database images too, listed as good (Oxford's query images are in good).
    gt = root / "gt_files"
    for k, (q_name, _, bbx, lm) in enumerate(queries):
        stem = f"landmark{lm}_{k % N_QUERIES + 1}"
        tag = "oxc1_" if "oxford" in name else ""
        atomic_write_text(gt / f"{stem}_query.txt", f"{tag}{q_name} " + " ".join(f"{v:.1f}" for v in bbx) + "\n")
        good = [q for q, _, _, other in queries if other == lm] + truth[lm]["easy"]
        for kind, names in (("good", good), ("ok", truth[lm]["hard"]), ("junk", truth[lm]["junk"])):
            atomic_write_text(gt / f"{stem}_{kind}.txt", "".join(f"{n}\n" for n in names))


for _name, _seed, _prefix in (("roxford5k", 1, "oxf"), ("rparis6k", 2, "par"), ("oxford5k", 1, "oxf"),
                              ("paris6k", 2, "paris")):
    register_mini(_name, lambda root, n=_name, s=_seed, p=_prefix: write_retrieval_scenes(root, n, s, p))
