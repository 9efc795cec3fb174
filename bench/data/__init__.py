"""Datasets in their standard layouts, evaluation transforms, and offline miniatures."""
from ._root import DataRoot, cache_dir, resolve_data_root
from .datasets import DATASETS, DatasetSpec, IndexedDataset, open_dataset, register_dataset
from .transforms import TransformSpec, build_eval_transform


def _import_dataset_modules() -> None:
    # Each dataset module registers its reader; new datasets need no edit here.
    import importlib
    import pkgutil
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in ("datasets", "transforms", "mini"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_dataset_modules()

__all__ = ["DataRoot", "cache_dir", "resolve_data_root", "DATASETS", "DatasetSpec", "IndexedDataset", "open_dataset",
           "register_dataset", "TransformSpec", "build_eval_transform"]
