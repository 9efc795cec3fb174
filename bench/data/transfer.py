"""The Kornblith et al. (2019) transfer datasets that torchvision reads directly, in torchvision's own folders.

| name       | folder under --data-root   | torchvision class                       | bench splits           |
|------------|----------------------------|-----------------------------------------|------------------------|
| food101    | food-101/                  | Food101(split=train/test)               | trainval, test         |
| cifar10    | cifar-10-batches-py/       | CIFAR10(train=bool)                     | trainval, test         |
| cifar100   | cifar-100-python/          | CIFAR100(train=bool)                    | trainval, test         |
| cars       | stanford_cars/             | StanfordCars(split=train/test)          | trainval, test         |
| aircraft   | fgvc-aircraft-2013b/       | FGVCAircraft(annotation_level=variant)  | train, val, test       |
| dtd        | dtd/ (holds dtd/images)    | DTD(partition=1)                        | train, val, test       |
| pets       | oxford-iiit-pet/           | OxfordIIITPet(split=trainval/test)      | trainval, test         |
| flowers102 | flowers-102/               | Flowers102(split=train/val/test)        | train, val, test       |

`trainval` is the official training set of a dataset that has no official validation split; the transfer
protocol holds a seeded validation subset out of it (ssl-transfer's 20 % or BYOL's sizes). Datasets with an
official val split expose train/val/test and the protocol concatenates train+val for the final fit, as
`linusericsson/ssl-transfer:linear.py` does. Manifests are the image counts of the full datasets (§7 of
research/protocols.md); a mismatch is reported by `open_dataset` and the dataset is never evaluated.

torchvision verifies the md5 of the CIFAR batches and of the Flowers .mat files. The miniatures (a root with
BENCH_MINI.json) are written by bench and cannot match those sums, so only for them the check is skipped; the
manifest check does not apply to them either. CIFAR's pickled batches are always read with bench's allowlist
unpickler (`bench._io.safe_unpickle`), never with `pickle.load`: a tampered file is refused, not executed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

from ..errors import DataError
from ._root import MINI_MARKER
from .datasets import DatasetSpec, register_dataset

__all__ = ["TORCHVISION_TRANSFER", "download_transfer_dataset", "is_mini_root"]


def is_mini_root(dataset_dir: Path) -> bool:
    """True when the dataset folder sits in a bench miniature root (BENCH_MINI.json beside it)."""
    return (Path(dataset_dir).parent / MINI_MARKER).is_file()


def _cifar_init(self, root, train: bool = True, transform=None, target_transform=None, download: bool = False):
    """torchvision's CIFAR `__init__`, with every batch and the meta file read by the allowlist unpickler:
    torchvision's plain `pickle.load` would run code hidden in a file (the miniatures skip the md5 check)."""
    import numpy as np
    from torchvision.datasets import VisionDataset
    VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
    self.train = train
    if download:
        self.download()
    if not self._check_integrity():
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
    folder = Path(self.root) / self.base_folder
    data, self.targets = [], []
    for file_name, _ in (self.train_list if train else self.test_list):
        entry = _cifar_pickle(folder / file_name, ("data",))
        labels = entry.get("labels", entry.get("fine_labels"))
        if labels is None:
            raise DataError(f"{folder / file_name}: CIFAR batch without 'labels'/'fine_labels'; re-extract it")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        self.targets.extend(int(t) for t in labels)
    try:
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
    except ValueError as e:
        raise DataError(f"{folder}: CIFAR batches are not 3072-byte rows ({e}); re-extract them") from e
    meta_path = folder / self.meta["filename"]
    if not is_mini_root(folder) and not _md5_ok(meta_path, self.meta["md5"]):
        raise RuntimeError("Dataset metadata file not found or corrupted. You can use download=True to download it")
    self.classes = list(_cifar_pickle(meta_path, (self.meta["key"],))[self.meta["key"]])
    self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity
    return check_integrity(str(path), md5)


def _cifar_pickle(path: Path, keys: tuple[str, ...]) -> dict:
    from .._io import safe_unpickle
    obj = safe_unpickle(path, DataError, "re-extract the official CIFAR archive there")
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise DataError(f"{path}: expected a CIFAR dict with {list(keys)}; re-extract the official CIFAR archive")
    return obj


def _tv(cls_name: str, mini: bool):
    """The torchvision dataset class; CIFAR always with the allowlist reader; for miniatures a subclass that
    skips the md5 check of official files."""
    import torchvision.datasets as tvd
    cls = getattr(tvd, cls_name)
    overrides = {"__init__": _cifar_init} if issubclass(cls, tvd.CIFAR10) else {}
    if mini and hasattr(cls, "_check_integrity"):
        overrides["_check_integrity"] = lambda self: True
    return type(f"Safe{cls_name}", (cls,), overrides) if overrides else cls


def _open_tv(cls_name: str, split_kwargs: Callable[[str], dict[str, Any]]):
    def open_(folder: Path, split: str, transform: Any) -> Dataset:
        cls = _tv(cls_name, is_mini_root(folder))
        try:
            return cls(str(folder.parent), transform=transform, **split_kwargs(split))
        except (RuntimeError, FileNotFoundError, KeyError, ValueError, OSError) as e:
            raise DataError(f"{folder}: not a readable {cls_name} layout for split {split!r} ({e}); "
                            f"re-extract it there or pass --download") from e
    return open_


_TRAIN_TEST = {"trainval": "train", "test": "test"}

# name → (folder, torchvision class, split → kwargs, bench splits, classes, manifest)
TORCHVISION_TRANSFER: dict[str, tuple] = {
    "food101": ("food-101", "Food101", lambda s: {"split": _TRAIN_TEST[s]}, ("trainval", "test"), 101,
                {"trainval": 75_750, "test": 25_250}),
    "cifar10": ("cifar-10-batches-py", "CIFAR10", lambda s: {"train": s == "trainval"}, ("trainval", "test"), 10,
                {"trainval": 50_000, "test": 10_000}),
    "cifar100": ("cifar-100-python", "CIFAR100", lambda s: {"train": s == "trainval"}, ("trainval", "test"), 100,
                 {"trainval": 50_000, "test": 10_000}),
    "cars": ("stanford_cars", "StanfordCars", lambda s: {"split": _TRAIN_TEST[s]}, ("trainval", "test"), 196,
             {"trainval": 8_144, "test": 8_041}),
    "aircraft": ("fgvc-aircraft-2013b", "FGVCAircraft", lambda s: {"split": s, "annotation_level": "variant"},
                 ("train", "val", "test"), 100, {"train": 3_334, "val": 3_333, "test": 3_333}),
    "dtd": ("dtd", "DTD", lambda s: {"split": s, "partition": 1}, ("train", "val", "test"), 47,
            {"train": 1_880, "val": 1_880, "test": 1_880}),
    "pets": ("oxford-iiit-pet", "OxfordIIITPet", lambda s: {"split": s}, ("trainval", "test"), 37,
             {"trainval": 3_680, "test": 3_669}),
    "flowers102": ("flowers-102", "Flowers102", lambda s: {"split": s}, ("train", "val", "test"), 102,
                   {"train": 1_020, "val": 1_020, "test": 6_149}),
}

for _name, (_folder, _cls, _kw, _splits, _classes, _manifest) in TORCHVISION_TRANSFER.items():
    register_dataset(DatasetSpec(name=_name, folder=_folder, splits=_splits, open=_open_tv(_cls, _kw),
                                 num_classes=_classes, manifest=_manifest))


def download_transfer_dataset(name: str, root: Path) -> None:
    """torchvision's own download into `root` (only on the user's --download). Cars' upstream URL is gone."""
    if name not in TORCHVISION_TRANSFER:
        raise DataError(f"{name}: no automatic download; place it under {root} by hand (see README, Transfer)")
    folder, cls_name, kw, splits, _, _ = TORCHVISION_TRANSFER[name]
    if name == "cars":
        raise DataError(f"{root / folder}: Stanford Cars cannot be downloaded automatically (the upstream URL is "
                        f"gone); place the devkit, cars_train/, cars_test/ and cars_test_annos_withlabels.mat there")
    for split in splits:
        try:
            _tv(cls_name, False)(str(root), download=True, **kw(split))
        except (RuntimeError, OSError) as e:
            raise DataError(f"{root / folder}: download of {name}/{split} failed ({e})") from e
