"""imagenet/ miniature: scikit-learn's 1,797 handwritten digits as a 10-class ImageFolder in ImageNet's layout.

Real images with real class structure (so k-NN and linear probes learn something), upsampled to 32×32 RGB JPEG,
with ImageNet-style wnid folders and `<wnid>_<n>.JPEG` file names (the names SimCLR's subset lists use).
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

    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype(np.uint8)
    idx = np.arange(len(images))
    train_idx, val_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=digits.target)
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in sorted(ids):
            wnid = MINI_IMAGENET_WNIDS[digits.target[i]]
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(images[i], mode="L").resize((SIZE, SIZE), Image.BICUBIC).convert("RGB")
            img.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=95)
    _write_subset_lists(root)


def _write_subset_lists(root: Path) -> None:
    """1percent.txt / 10percent.txt in SimCLR's format (class-balanced, fixed seed), beside train/ and val/."""
    from torchvision.datasets import ImageFolder

    from ..subsets import write_balanced_list
    samples = ImageFolder(str(root / "train")).samples
    for percent in (1, 10):
        write_balanced_list(samples, percent / 100, seed=percent, path=root / f"{percent}percent.txt")
