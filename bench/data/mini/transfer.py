"""Miniatures of eleven of the twelve Kornblith transfer datasets in the exact layouts their readers expect (the
twelfth, VOC2007, reads the detection miniature's VOCdevkit).

Images are scikit-learn's handwritten digits (real class structure, so a linear probe learns something), each
class a digit, upsampled to 32 px and then made hard enough that features must be good to score well: the
digit is shifted, rescaled and tinted per image and laid over a random colour gradient with strokes of clutter
and pixel noise (`digit_images`). Raw pixels and random-init networks score low on them; a backbone that has
learnt digit shapes scores high, which is what the validity tests check. Training sets are small (a few images
per class, as in the few-shot end of transfer) and test sets larger, so a test image is worth about one point.

| folder                 | written files (as in the real archives)                                          |
|------------------------|----------------------------------------------------------------------------------|
| food-101/              | images/<class>/<id>.jpg, meta/{train,test}.json, meta/classes.txt                 |
| cifar-100-python/      | train, test (pickled dicts: data, fine_labels, coarse_labels), meta               |
| birdsnap/              | images.txt (tab-separated, `path` column), test_images.txt, download/images/...  |
|                        | (one listed image is missing, as with the real dead URLs)                         |
| SUN397/                | ClassName.txt, Partitions/{Training,Testing}_01.txt, <l>/<class>/sun_*.jpg        |
| stanford_cars/         | cars_{train,test}/*.jpg, devkit/{cars_meta,cars_train_annos}.mat,                 |
|                        | cars_test_annos_withlabels.mat                                                    |

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

__all__ = ["digit_images", "render_digit"]

SIZE = 32


def render_digit(glyph: np.ndarray, rng: np.random.RandomState, tint=(1.0, 1.0, 1.0), size: int = SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 photograph of an 8x8 scikit-learn digit (values 0..16): shifted, rescaled and
    coloured (around `tint`) over a darker random colour gradient with strokes of clutter and pixel noise."""
    from PIL import Image, ImageDraw
    side = int(rng.randint(size * 3 // 4, size + 1))
    g = Image.fromarray((glyph / 16 * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    alpha = np.zeros((size, size), np.float32)
    x0, y0 = rng.randint(0, size - side + 1, 2)
    alpha[y0:y0 + side, x0:x0 + side] = np.asarray(g, np.float32) / 255
    a, b = rng.uniform(0, 110, (2, 3))          # darker than the digit, so it stays legible
    t = np.linspace(0, 1, size)[None, :, None]
    bg = Image.fromarray(np.clip(a * (1 - t) + b * t, 0, 255).astype(np.uint8).repeat(size, 0))
    draw = ImageDraw.Draw(bg)
    for _ in range(rng.randint(0, 3)):
        draw.line([tuple(int(v) for v in rng.randint(0, size, 2)) for _ in range(2)],
                  fill=tuple(int(v) for v in rng.randint(0, 256, 3)), width=int(rng.randint(1, 3)))
    colour = np.clip(np.asarray(tint) * rng.uniform(190, 255) * rng.uniform(0.6, 1.0, 3), 0, 255)
    img = np.asarray(bg, np.float32) * (1 - alpha[..., None]) + colour * alpha[..., None]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def digit_images(classes: int, per_class: int, seed: int, tint: tuple[float, float, float]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 RGB digit photographs (`render_digit`) of classes 0..classes-1, `per_class` each,
    grouped by class."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.RandomState(seed)
    images, labels = [], []
    for c in range(classes):
        idx = rng.choice(np.flatnonzero(digits.target == c), per_class, replace=False)
        for i in idx:
            images.append(render_digit(digits.images[i], rng, tint))
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
    images, labels = digit_images(10, 20, seed=1, tint=(1.0, 0.9, 0.8))
    train, test = _thirds(labels, (8, 12))
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)        # CIFAR rows: R plane, G plane, B plane
    batches = np.array_split(np.random.RandomState(0).permutation(train), 5)
    for k, idx in enumerate(batches, 1):
        (root / f"data_batch_{k}").write_bytes(pickle.dumps({"data": rows[idx], "labels": labels[idx].tolist()}))
    (root / "test_batch").write_bytes(pickle.dumps({"data": rows[test], "labels": labels[test].tolist()}))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"digit{d}" for d in range(10)]}))


@register_mini("dtd")
def write_dtd_mini(root: Path) -> None:
    names = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "dotted",
             "striped"]
    images, labels = digit_images(len(names), 20, seed=2, tint=(0.7, 1.0, 0.7))
    data = root / "dtd"
    for split, idx in zip(("train", "val", "test"), _thirds(labels, (4, 4, 12))):
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
    images, labels = digit_images(8, 20, seed=3, tint=(1.0, 0.7, 0.9))
    for i, img in enumerate(images, 1):                                  # image ids are 1-based
        _save(img, root / "jpg" / f"image_{i:05d}.jpg")
    savemat(root / "imagelabels.mat", {"labels": (labels + 1)[None, :]})
    trn, val, tst = (idx + 1 for idx in _thirds(labels, (4, 4, 12)))
    savemat(root / "setid.mat", {"trnid": trn[None, :], "valid": val[None, :], "tstid": tst[None, :]})


@register_mini("oxford-iiit-pet")
def write_pets_mini(root: Path) -> None:
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("beagle", 2), ("Bengal", 1), ("Birman", 1),
              ("boxer", 2), ("chihuahua", 2), ("Persian", 1)]                   # (name, species 1 cat 2 dog)
    images, labels = digit_images(len(breeds), 20, seed=4, tint=(0.9, 0.8, 1.0))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, idx in zip(("trainval", "test"), _thirds(labels, (8, 12))):
        lines = []
        for i in idx:
            name, species = breeds[labels[i]]
            _save(images[i], root / "images" / f"{name}_{i}.jpg")
            lines.append(f"{name}_{i} {labels[i] + 1} {species} {i}")
        (root / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")


@register_mini("caltech101")
def write_caltech_mini(root: Path) -> None:
    names = ["BACKGROUND_Google", "Faces_easy", "Leopards", "Motorbikes", "airplanes", "anchor"]   # real names
    images, labels = digit_images(len(names), 40, seed=5, tint=(0.8, 0.8, 0.8))   # 30 train (the reader) + 10 test
    for c, name in enumerate(names):
        for n, i in enumerate(np.flatnonzero(labels == c), 1):
            _save(images[i], root / "101_ObjectCategories" / name / f"image_{n:04d}.jpg")


@register_mini("fgvc-aircraft-2013b")
def write_aircraft_mini(root: Path) -> None:
    variants = ["707-320", "727-200", "A300B4", "A320", "BAe 146-200", "F/A-18", "Tu-154", "Yak-42"]  # one has a /
    images, labels = digit_images(len(variants), 20, seed=6, tint=(0.8, 0.9, 1.0))
    data = root / "data"
    for i, img in enumerate(images):
        _save(img, data / "images" / f"{1000000 + i}.jpg")
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    parts = dict(zip(("train", "val", "test"), _thirds(labels, (4, 4, 12))))
    parts["trainval"] = np.sort(np.concatenate([parts["train"], parts["val"]]))
    for split, idx in parts.items():
        lines = [f"{1000000 + i} {variants[labels[i]]}" for i in idx]
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


@register_mini("food-101")
def write_food101_mini(root: Path) -> None:
    import json
    names = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beignets", "bibimbap", "caesar_salad",
             "churros"]
    images, labels = digit_images(len(names), 20, seed=7, tint=(1.0, 0.8, 0.6))
    meta = {}
    for split, idx in zip(("train", "test"), _thirds(labels, (8, 12))):
        entries: dict[str, list[str]] = {n: [] for n in names}
        for i in idx:
            name = names[labels[i]]
            _save(images[i], root / "images" / name / f"{100000 + i}.jpg")
            entries[name].append(f"{name}/{100000 + i}")
        meta[split] = entries
    (root / "meta").mkdir(parents=True, exist_ok=True)
    for split, entries in meta.items():
        (root / "meta" / f"{split}.json").write_text(json.dumps(entries))
        (root / "meta" / f"{split}.txt").write_text("\n".join(e for v in entries.values() for e in v) + "\n")
    (root / "meta" / "classes.txt").write_text("\n".join(names) + "\n")


@register_mini("cifar-100-python")
def write_cifar100_mini(root: Path) -> None:
    fine = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle"]
    images, labels = digit_images(len(fine), 20, seed=8, tint=(0.9, 1.0, 0.9))
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for split, idx in zip(("train", "test"), _thirds(labels, (8, 12))):
        (root / split).write_bytes(pickle.dumps({
            "filenames": [f"mini_{i}.png" for i in idx], "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels[idx].tolist(), "coarse_labels": (labels[idx] // 5).tolist(), "data": rows[idx]}))
    (root / "meta").write_bytes(pickle.dumps({"fine_label_names": fine,
                                              "coarse_label_names": ["fruit_and_vegetables", "household"]}))


@register_mini("birdsnap")
def write_birdsnap_mini(root: Path) -> None:
    species = ["Acadian_Flycatcher", "Acorn_Woodpecker", "Alder_Flycatcher", "Allens_Hummingbird",
               "Altamira_Oriole", "American_Avocet", "American_Bittern", "American_Black_Duck"]
    images, labels = digit_images(len(species), 20, seed=9, tint=(0.8, 1.0, 0.8))
    header = ["url", "md5", "path", "species_id", "bb_x1", "bb_y1", "bb_x2", "bb_y2"]
    rows, test = ["\t".join(header)], ["path"]
    for split, idx in zip(("train", "test"), _thirds(labels, (8, 12))):
        for i in idx:
            rel = f"{species[labels[i]]}/{200000 + i}.jpg"
            if i != idx[-1] or split == "train":     # the last test image's URL is "dead": listed, not downloaded
                _save(images[i], root / "download" / "images" / rel)
            rows.append("\t".join([f"http://example.invalid/{200000 + i}.jpg", "0" * 32, rel,
                                   str(labels[i] + 1), "0", "0", "31", "31"]))
            if split == "test":
                test.append(rel)
    (root / "images.txt").write_text("\n".join(rows) + "\n")
    (root / "test_images.txt").write_text("\n".join(test) + "\n")


@register_mini("SUN397")
def write_sun397_mini(root: Path) -> None:
    classes = ["/a/abbey", "/a/airport_terminal", "/b/bakery/shop", "/b/beach", "/c/castle", "/c/coast",
               "/d/desert/sand", "/f/forest_path"]                  # real names, two with sub-categories
    images, labels = digit_images(len(classes), 20, seed=10, tint=(0.9, 0.9, 1.0))
    (root / "ClassName.txt").write_text("\n".join(classes) + "\n")
    (root / "Partitions").mkdir(parents=True, exist_ok=True)
    for split, idx in zip(("Training", "Testing"), _thirds(labels, (8, 12))):
        lines = []
        for i in idx:
            rel = f"{classes[labels[i]]}/sun_{300000 + i:07d}.jpg"
            _save(images[i], root / rel.lstrip("/"))
            lines.append(rel)
        (root / "Partitions" / f"{split}_01.txt").write_text("\n".join(lines) + "\n")


@register_mini("stanford_cars")
def write_cars_mini(root: Path) -> None:
    from scipy.io import savemat
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
             "Acura TSX Sedan 2012", "Acura Integra Type R 2001", "Acura ZDX Hatchback 2012",
             "Aston Martin V8 Vantage Convertible 2012"]
    images, labels = digit_images(len(names), 20, seed=11, tint=(1.0, 1.0, 0.8))
    fields = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    for split, idx in zip(("train", "test"), _thirds(labels, (8, 12))):
        ann = np.zeros((1, len(idx)), dtype=fields)
        for n, i in enumerate(idx):
            fname = f"{n + 1:05d}.jpg"
            _save(images[i], root / f"cars_{split}" / fname)
            ann[0, n] = (np.uint8(0), np.uint8(0), np.uint8(31), np.uint8(31), np.uint8(labels[i] + 1), fname)
        mat = root / "devkit" / "cars_train_annos.mat" if split == "train" else root / "cars_test_annos_withlabels.mat"
        savemat(mat, {"annotations": ann})
    savemat(root / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
