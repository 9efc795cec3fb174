"""imagenet/ miniature: scikit-learn's 1,797 handwritten digits as a 10-class ImageFolder in ImageNet's layout.

Real images with real class structure (so k-NN and linear probes learn something), each rendered as a 32×32 RGB
JPEG "photograph" (`transfer.render_digit`: shifted, rescaled, randomly coloured over a colour gradient with
clutter and noise), with ImageNet-style wnid folders and `<wnid>_<n>.JPEG` file names (the names SimCLR's subset
lists use). Colour and clutter put every miniature (ImageNet, transfer, VOC, ADE20K, Oxford/Paris: all digits in
colour) in one domain, so a backbone trained here has features the other miniatures can use, and random features
score low: the validity tests rank trained above random on each protocol.
A fixed stratified 80/20 train/val split, and 1% / 10% label lists in SimCLR's format.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import register_mini

__all__ = ["write_imagenet_mini", "MINI_IMAGENET_WNIDS"]

MINI_IMAGENET_WNIDS = [f"n{d:08d}" for d in range(10)]
SIZE = 32


@register_mini("imagenet")
def write_imagenet_mini(root: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from .transfer import render_digit
    digits = load_digits()
    rng = np.random.RandomState(2012)
    images = [render_digit(g, rng) for g in digits.images]
    idx = np.arange(len(images))
    train_idx, val_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=digits.target)
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in sorted(ids):
            wnid = MINI_IMAGENET_WNIDS[digits.target[i]]
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)
    _write_subset_lists(root)


def _write_subset_lists(root: Path) -> None:
    """1percent.txt / 10percent.txt in SimCLR's format (class-balanced, fixed seed), beside train/ and val/."""
    from torchvision.datasets import ImageFolder

    from ..subsets import write_balanced_list
    samples = ImageFolder(str(root / "train")).samples
    for percent in (1, 10):
        write_balanced_list(samples, percent / 100, seed=percent, path=root / f"{percent}percent.txt")
