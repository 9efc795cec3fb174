"""Readers for the ImageNet robustness test sets, each in its released on-disk layout under the data root:

    imagenet-a/<wnid>/*.jpg                         200 wnids (hendrycks/natural-adv-examples)
    imagenet-r/<wnid>/*.jpg                         200 wnids (hendrycks/imagenet-r)
    imagenet-sketch/<wnid>/*.JPEG                   1000 wnids (HaohanWang/ImageNet-Sketch; its zip's `sketch/`)
    imagenetv2-matched-frequency-format-val/<i>/*   folders 0…999 = class index in sorted-wnid order (modestyachts)
    imagenet-c/<corruption>/<severity 1-5>/<wnid>/*.JPEG
    imagenet-p/<perturbation>/<wnid>/<video>.mp4    (or <video>/ holding the frames, in name order)

Labels are indices into the classifier's own class list (its wnids), matched by wnid, so a test set holding a
subset of the classes (ImageNet-A/-R) is labelled like the classifier was trained.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import check_folder, load_rgb

__all__ = ["FOLDERS", "ImageList", "open_wnid_folder", "open_imagenetv2", "corruption_folders", "open_videos"]

FOLDERS = {"imagenet_a": "imagenet-a", "imagenet_r": "imagenet-r", "imagenet_sketch": "imagenet-sketch",
           "imagenetv2": "imagenetv2-matched-frequency-format-val", "imagenet_c": "imagenet-c",
           "imagenet_p": "imagenet-p"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov")


def _dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


class ImageList(Dataset):
    """(path, label) pairs read as RGB through `transform`."""

    def __init__(self, samples: list[tuple[Path, int]], transform: Callable | None):
        self.samples, self.transform = samples, transform
        self.targets = [t for _, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        img = load_rgb(path)
        return (self.transform(img) if self.transform else img), target


def _label_of(wnid: str, classes: Sequence[str], folder: Path) -> int:
    try:
        return list(classes).index(wnid)
    except ValueError:
        raise DataError(f"{folder / wnid}: class {wnid} is not one of the classifier's {len(classes)} classes; "
                        f"the classifier was trained on another label set (evaluate an ImageNet-1k classifier)") \
            from None


def open_wnid_folder(folder: Path, classes: Sequence[str], transform, what: str) -> tuple[ImageList, list[str]]:
    """A `<wnid>/<image>` folder labelled by the classifier's class index; also returns the wnids present."""
    check_folder(folder, what)
    if (folder / "sketch").is_dir() and not any(d.startswith("n") for d in _dirs(folder)):
        folder = folder / "sketch"   # ImageNet-Sketch's zip unpacks to sketch/<wnid>
    wnids = _dirs(folder)
    samples = [(p, _label_of(w, classes, folder)) for w in wnids for p in _images(folder / w)]
    if not samples:
        raise DataError(f"{folder}: no images in its <wnid>/ folders; (re)extract {what} there")
    return ImageList(samples, transform), wnids


def open_imagenetv2(folder: Path, num_classes: int, transform) -> ImageList:
    """ImageNetV2's `<class index>/<image>` folders (the index is ImageNet's sorted-wnid order)."""
    check_folder(folder, "ImageNetV2")
    samples = []
    for name in _dirs(folder):
        if not name.isdigit() or int(name) >= num_classes:
            raise DataError(f"{folder / name}: ImageNetV2 folders are class indices 0…{num_classes - 1}; "
                            f"re-extract the matched-frequency release there")
        samples += [(p, int(name)) for p in _images(folder / name)]
    return ImageList(samples, transform)


def corruption_folders(folder: Path) -> dict[str, list[Path]]:
    """{corruption: [severity 1 folder, …, severity 5 folder]} of an ImageNet-C tree."""
    check_folder(folder, "ImageNet-C")
    out = {}
    for c in _dirs(folder):
        sev = [folder / c / str(s) for s in range(1, 6)]
        missing = [p.name for p in sev if not p.is_dir()]
        if missing:
            raise DataError(f"{folder / c}: ImageNet-C severities {missing} missing (expected 1/ … 5/); "
                            f"re-extract the {c} archive there")
        out[c] = sev
    if not out:
        raise DataError(f"{folder}: no <corruption>/ folders; extract the ImageNet-C archives there")
    return out


class _Videos(Dataset):
    """One sample = all frames of one ImageNet-P sequence, (T, C, H, W), and its label."""

    def __init__(self, samples: list[tuple[Path, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def _frames(self, path: Path) -> list[Any]:
        if path.is_dir():
            return [load_rgb(p) for p in _images(path)]
        try:   # the release's .mp4 (ImageNet-P/utils/video_loader.py reads it with cv2, BGR → RGB): PyAV's frames
            import av
        except ImportError:
            raise DataError(f"{path}: decoding ImageNet-P's videos needs PyAV (pip install av), or unpack each to "
                            f"frames: mkdir {path.with_suffix('')} && ffmpeg -i {path} "
                            f"{path.with_suffix('')}/%03d.png") from None
        try:
            with av.open(str(path)) as container:
                return [frame.to_image() for frame in container.decode(video=0)]
        except (av.error.FFmpegError, OSError) as e:
            raise DataError(f"{path}: unreadable video ({str(e)[:120]}); re-extract it") from None

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        frames = self._frames(path)
        if len(frames) < 2:
            raise DataError(f"{path}: an ImageNet-P sequence needs at least 2 frames, found {len(frames)}")
        return torch.stack([self.transform(f) for f in frames]), target


def open_videos(folder: Path, classes: Sequence[str], transform) -> _Videos:
    """One perturbation's `<wnid>/<video>` sequences (.mp4, or a folder of frames)."""
    samples = []
    for w in _dirs(folder):
        label = _label_of(w, classes, folder)
        samples += [(p, label) for p in sorted((folder / w).iterdir())
                    if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES]
    if not samples:
        raise DataError(f"{folder}: no <wnid>/<video> sequences; extract the ImageNet-P archive there")
    return _Videos(samples, transform)
