"""Datasets in their standard layouts, evaluation transforms, and offline miniatures."""
from ._root import DataRoot, cache_dir, resolve_data_root
from .datasets import DATASETS, DatasetSpec, IndexedDataset, open_dataset, register_dataset
from .transforms import TransformSpec, build_eval_transform

__all__ = ["DataRoot", "cache_dir", "resolve_data_root", "DATASETS", "DatasetSpec", "IndexedDataset", "open_dataset",
           "register_dataset", "TransformSpec", "build_eval_transform"]
