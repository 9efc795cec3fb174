"""ADEChallengeData2016/ miniature: procedural outdoor scenes in ADE20K's layout, generated in about a second.

Each scene has a sky gradient above a horizon, textured ground below it, and two or three large handwritten
digits in random colours whose strokes are labelled by shape (a "2" is building, a "5" is tree); an "other" noise patch is labelled 0 so reduce_zero_label's ignore path is exercised.
Labels use the real ADE20K raw ids (sky 3, building 2, tree 5, grass 10, road 7), so the 150-class head and the
metrics see the same id space as on the full dataset. Images are JPEG, 96–128 px per side; label maps PNG mode L.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import register_mini

__all__ = ["write_ade20k_mini", "MINI_ADE_CLASSES"]

MINI_ADE_CLASSES = {"building": 2, "sky": 3, "tree": 5, "road": 7, "grass": 10}   # raw ADE ids (1-based)
COUNTS = {"training": 40, "validation": 16}


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = (int(v) for v in rng.integers(96, 129, size=2))
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.6))
    sky = yy < horizon
    grad = (yy / max(horizon, 1))[..., None]
    img[sky] = (np.array([70, 130, 230]) * (1 - 0.4 * grad) + np.array([150, 190, 250]) * 0.4 * grad)[sky]
    label[sky] = MINI_ADE_CLASSES["sky"]
    ground = MINI_ADE_CLASSES["grass"] if rng.random() < 0.5 else MINI_ADE_CLASSES["road"]
    base = np.array([60, 150, 50]) if ground == MINI_ADE_CLASSES["grass"] else np.array([110, 110, 115])
    img[~sky] = base + rng.normal(0, 18, size=(int((~sky).sum()), 3))
    label[~sky] = ground
    # "buildings" and "trees" are large handwritten digits (a 2 and a 5) in random colours: only their shape
    # tells them apart, which trained features capture and random ones barely do (the validity tests check it)
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    for _ in range(int(rng.integers(2, 4))):
        cls = "building" if rng.random() < 0.5 else "tree"
        size = int(rng.integers(28, min(h, w) - 8))
        y0, x0 = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        pick = rng.choice(np.flatnonzero(digits.target == (2 if cls == "building" else 5)))
        glyph = Image.fromarray((digits.images[pick] / 16 * 255).astype(np.uint8)).resize((size, size),
                                                                                          Image.BICUBIC)
        stroke = np.zeros((h, w), bool)
        stroke[y0:y0 + size, x0:x0 + size] = np.asarray(glyph) > 100
        img[stroke] = rng.uniform(0, 255, 3) + rng.normal(0, 10, size=(int(stroke.sum()), 3))
        label[stroke] = MINI_ADE_CLASSES[cls]
    oy, ox = int(rng.integers(horizon, h - 8)), int(rng.integers(0, w - 16))
    other = (yy >= oy) & (yy < oy + 8) & (xx >= ox) & (xx < ox + 16)
    img[other] = rng.uniform(0, 255, size=(int(other.sum()), 3))
    label[other] = 0                                                              # "other" → ignored
    return np.clip(img, 0, 255).astype(np.uint8), label


@register_mini("ADEChallengeData2016")
def write_ade20k_mini(root: Path) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for folder, n in COUNTS.items():
        (root / "images" / folder).mkdir(parents=True)
        (root / "annotations" / folder).mkdir(parents=True)
        for i in range(n):
            img, label = _scene(rng)
            stem = f"ADE_{'train' if folder == 'training' else 'val'}_{i + 1:08d}"
            Image.fromarray(img).save(root / "images" / folder / f"{stem}.jpg", quality=95)
            Image.fromarray(label, mode="L").save(root / "annotations" / folder / f"{stem}.png")
