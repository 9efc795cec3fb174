"""Miniatures of six transfer datasets in the exact layouts torchvision's classes read (no VOCdevkit: the
detection miniature owns that folder, and `voc2007` reads it when present).

Images are scikit-learn's handwritten digits (real class structure, so a linear probe learns something), tinted
per dataset and upsampled to 32 px; each class is a digit. Sizes are a few dozen images per dataset:

| folder                 | written files (as in the real archives)                                          |
|------------------------|----------------------------------------------------------------------------------|
| cifar-10-batches-py/   | data_batch_1..5, test_batch (pickled dicts, 3072-byte rows), batches.meta        |
| dtd/dtd/               | images/<class>/<class>_NNNN.jpg, labels/{train,val,test}1.txt                     |
| flowers-102/           | jpg/image_NNNNN.jpg, imagelabels.mat (1-based labels), setid.mat (trnid/valid/tstid) |
| oxford-iiit-pet/       | images/<Breed>_N.jpg, annotations/{trainval,test}.txt ("id class species breed") |
| caltech101/            | 101_ObjectCategories/<class>/image_NNNN.jpg incl. BACKGROUND_Google (33 per class) |
| fgvc-aircraft-2013b/   | data/images/NNNNNNN.jpg, data/variants.txt, data/images_variant_{split}.txt      |
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from . import register_mini

__all__ = ["digit_images"]

SIZE = 32


def digit_images(classes: int, per_class: int, seed: int, tint: tuple[float, float, float]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 RGB digits of classes 0..classes-1, `per_class` each, grouped by class."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.RandomState(seed)
    images, labels = [], []
    for c in range(classes):
        idx = rng.choice(np.flatnonzero(digits.target == c), per_class, replace=False)
        for i in idx:
            g = Image.fromarray((digits.images[i] / 16 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
            images.append((np.asarray(g, dtype=np.float32)[..., None] * np.asarray(tint)).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.asarray(labels)


def _save(img: np.ndarray, path: Path) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=95)


def _thirds(labels: np.ndarray, parts: tuple[int, ...]) -> list[np.ndarray]:
    """Split each class's images (grouped, in order) into consecutive parts of the given sizes."""
    out = [[] for _ in parts]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        bounds = np.cumsum((0,) + parts)
        for k in range(len(parts)):
            out[k] += idx[bounds[k]:bounds[k + 1]].tolist()
    return [np.asarray(o) for o in out]


@register_mini("cifar-10-batches-py")
def write_cifar10_mini(root: Path) -> None:
    images, labels = digit_images(10, 15, seed=1, tint=(1.0, 0.9, 0.8))
    train, test = _thirds(labels, (10, 5))
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)        # CIFAR rows: R plane, G plane, B plane
    batches = np.array_split(np.random.RandomState(0).permutation(train), 5)
    for k, idx in enumerate(batches, 1):
        (root / f"data_batch_{k}").write_bytes(pickle.dumps({"data": rows[idx], "labels": labels[idx].tolist()}))
    (root / "test_batch").write_bytes(pickle.dumps({"data": rows[test], "labels": labels[test].tolist()}))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"digit{d}" for d in range(10)]}))


@register_mini("dtd")
def write_dtd_mini(root: Path) -> None:
    names = ["banded", "dotted", "striped", "zigzagged"]
    images, labels = digit_images(len(names), 24, seed=2, tint=(0.7, 1.0, 0.7))
    data = root / "dtd"
    for split, idx in zip(("train", "val", "test"), _thirds(labels, (8, 8, 8))):
        lines = []
        for i in idx:
            rel = f"{names[labels[i]]}/{names[labels[i]]}_{i:04d}.jpg"
            _save(images[i], data / "images" / rel)
            lines.append(rel)
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


@register_mini("flowers-102")
def write_flowers_mini(root: Path) -> None:
    from scipy.io import savemat
    images, labels = digit_images(4, 20, seed=3, tint=(1.0, 0.7, 0.9))
    for i, img in enumerate(images, 1):                                  # image ids are 1-based
        _save(img, root / "jpg" / f"image_{i:05d}.jpg")
    savemat(root / "imagelabels.mat", {"labels": (labels + 1)[None, :]})
    trn, val, tst = (idx + 1 for idx in _thirds(labels, (6, 6, 8)))
    savemat(root / "setid.mat", {"trnid": trn[None, :], "valid": val[None, :], "tstid": tst[None, :]})


@register_mini("oxford-iiit-pet")
def write_pets_mini(root: Path) -> None:
    breeds = [("Abyssinian", 1), ("beagle", 2), ("Bengal", 1), ("boxer", 2)]     # (name, species 1 cat 2 dog)
    images, labels = digit_images(len(breeds), 20, seed=4, tint=(0.9, 0.8, 1.0))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, idx in zip(("trainval", "test"), _thirds(labels, (10, 10))):
        lines = []
        for i in idx:
            name, species = breeds[labels[i]]
            _save(images[i], root / "images" / f"{name}_{i}.jpg")
            lines.append(f"{name}_{i} {labels[i] + 1} {species} {i}")
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


@register_mini("caltech101")
def write_caltech_mini(root: Path) -> None:
    names = ["BACKGROUND_Google", "Faces_easy", "airplanes"]     # real folder names; 30 train + 3 test each
    images, labels = digit_images(len(names), 33, seed=5, tint=(0.8, 0.8, 0.8))
    for c, name in enumerate(names):
        for n, i in enumerate(np.flatnonzero(labels == c), 1):
            _save(images[i], root / "101_ObjectCategories" / name / f"image_{n:04d}.jpg")


@register_mini("fgvc-aircraft-2013b")
def write_aircraft_mini(root: Path) -> None:
    variants = ["707-320", "A300B4", "F/A-18", "Tu-154"]        # real variant names (one has a slash)
    images, labels = digit_images(len(variants), 15, seed=6, tint=(0.8, 0.9, 1.0))
    data = root / "data"
    for i, img in enumerate(images):
        _save(img, data / "images" / f"{1000000 + i}.jpg")
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    parts = dict(zip(("train", "val", "test"), _thirds(labels, (5, 5, 5))))
    parts["trainval"] = np.sort(np.concatenate([parts["train"], parts["val"]]))
    for split, idx in parts.items():
        lines = [f"{1000000 + i} {variants[labels[i]]}" for i in idx]
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
