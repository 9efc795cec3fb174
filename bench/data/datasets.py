"""Dataset registry: name → reader of its standard on-disk layout under the data root.

Every dataset yields (image, target, index) so features are written by index and every row is checked filled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from .._registry import Registry
from ..errors import DataError

__all__ = ["DatasetSpec", "DATASETS", "register_dataset", "open_dataset", "IndexedDataset", "check_folder",
           "load_rgb", "SkipBadImages", "drop_skipped", "check_layout"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str                                      # standard folder name under the data root
    splits: tuple[str, ...]
    open: Callable[[Path, str, Any], Dataset]        # (dataset dir, split, transform) → dataset of (img, target)
    num_classes: int | None = None
    manifest: dict[str, int] = field(default_factory=dict)  # expected image count per split (full dataset)
    multilabel: bool = False
    draft: bool = False                              # its open() passes the transform's draft_size to load_rgb


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


class IndexedDataset(Dataset):
    """(image, target) → (image, target, index): the index travels with the sample (DINOv2's adapter)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        try:
            img, target = self.base[i]
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"could not read sample {i} of {self.base}: {e}") from e
        return img, target, i


def load_rgb(path: str | Path, draft: int | None = None):
    """An image as RGB, or a one-line DataError naming the file (a truncated JPEG otherwise surfaces as a bare
    `OSError: Truncated File Read` from deep inside a DataLoader). `draft`: a JPEG may be decoded at 1/2, 1/4 or
    1/8 size as long as both sides stay ≥ draft (TransformSpec.draft); other formats ignore it."""
    from PIL import Image
    try:
        with open(path, "rb") as f:
            im = Image.open(f)
            if draft:
                im.draft("RGB", (draft, draft))
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e}); replace it with an intact copy or delete it") from None


class SkipBadImages(Dataset):
    """`--skip-bad-images`: a sample whose image cannot be read becomes None (dropped from its batch by
    `drop_skipped`) and its file is appended to `log` — a file, so DataLoader workers report it too — for the
    record to count. Only training/eval loaders use it; feature extraction needs every row."""

    def __init__(self, base: Dataset, log: Path):
        self.base, self.log = base, Path(log)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        try:
            return self.base[i]
        except DataError as e:
            import logging
            logging.getLogger(__name__).warning("skipped: %s", e)
            with open(self.log, "a") as f:
                f.write(str(e).split(": ", 1)[0].replace("\n", " ") + "\n")
            return None


def drop_skipped(batch: list):
    """collate_fn for SkipBadImages: the batch without its unreadable samples."""
    from torch.utils.data import default_collate
    kept = [b for b in batch if b is not None]
    if not kept:
        raise DataError(f"every image of a batch of {len(batch)} was unreadable; check the dataset folder")
    return default_collate(kept)


def check_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found; pass --data-root DIR holding it, "
                        f"or run `bench data mini --root DIR` for the miniatures")
    if not any(path.iterdir()):
        raise DataError(f"{path}: {what} folder is empty; (re)extract the dataset there")
    return path


def check_layout(name: str, root: Path, *, mini: bool = False) -> None:
    """The cheap part of open_dataset, for before any expensive work: a registered dataset's folder is there and
    not empty (a protocol that reads several datasets checks the rest when it opens them)."""
    if name in DATASETS:
        check_folder(Path(root) / DATASETS.get(name).folder, name)


def open_dataset(name: str, root: Path, split: str, transform: Any, *, mini: bool = False) -> Dataset:
    spec = DATASETS.get(name)
    if split not in spec.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}; splits: {', '.join(spec.splits)}")
    if getattr(transform, "draft_size", None) and not spec.draft:
        raise DataError(f"transform draft=true (reduced-size JPEG decoding) is implemented for ImageNet-style "
                        f"folders only, not dataset {name!r}; drop draft from the transform")
    ds = spec.open(check_folder(root / spec.folder, name), split, transform)
    expected = spec.manifest.get(split)
    if expected is not None and not mini and len(ds) != expected:
        raise DataError(f"{root / spec.folder}: {name}/{split} has {len(ds)} images, expected {expected}; "
                        f"the download is partial or wrong; re-extract it")
    return ds
