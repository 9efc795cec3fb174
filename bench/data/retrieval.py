"""Oxford5k / Paris6k, revisited (roxford5k, rparis6k) and original (oxford5k, paris6k).

Revisited (filipradenovic/revisitop:python/dataset.py): `<root>/<name>/jpg/<id>.jpg` and `gnd_<name>.pkl` holding
`imlist` (database), `qimlist` (queries, not in the database) and `gnd[i]` = {bbx, easy, hard, junk}.

Original (Philbin et al.; read as facebookresearch/deepcluster:eval_retrieval.py does): `<root>/<name>/jpg/*.jpg`
and the ground-truth folder `gt_files/` (or `lab/`) with `<landmark>_<k>_query.txt` ("[oxc1_]<image> x1 y1 x2 y2")
and `<landmark>_<k>_{good,ok,junk}.txt`. The database is every jpg (sorted) minus the 20 corrupt Paris images;
queries stay in the database.

Both become one `RetrievalData`: database names, query names, per-query bbox and index arrays over the database
(`easy`/`hard`/`junk` for revisited, `good`/`ok`/`junk` for original).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from .._io import safe_unpickle
from ..errors import DataError
from .datasets import DatasetSpec, check_folder, register_dataset

__all__ = ["RetrievalData", "load_retrieval_data", "safe_load_gnd", "RetrievalImages", "REVISITED", "ORIGINAL",
           "OTHER_DATASET", "PARIS_BLACKLIST"]

REVISITED = ("roxford5k", "rparis6k")
ORIGINAL = ("oxford5k", "paris6k")
# Whitening is learned on "the other" dataset (DeepCluster: Paris for Oxford and vice versa).
OTHER_DATASET = {"roxford5k": "rparis6k", "rparis6k": "roxford5k", "oxford5k": "paris6k", "paris6k": "oxford5k"}

# Corrupt Paris images that standard practice drops (deepcluster eval_retrieval.py `blacklisted`).
PARIS_BLACKLIST = frozenset(
    f"paris_{n}" for n in (
        "louvre_000136 louvre_000146 moulinrouge_000422 museedorsay_001059 notredame_000188 pantheon_000284 "
        "pantheon_000960 pantheon_000974 pompidou_000195 pompidou_000196 pompidou_000201 pompidou_000467 "
        "pompidou_000640 sacrecoeur_000299 sacrecoeur_000330 sacrecoeur_000353 triomphe_000662 triomphe_000833 "
        "triomphe_000863 triomphe_000867").split())

def safe_load_gnd(path: Path) -> dict[str, Any]:
    """Read a revisitop gnd pickle with an allowlist (containers, str, numbers, numpy arrays); never runs code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ground-truth file not found; download it from revisitop "
                        f"(http://cmp.felk.cvut.cz/revisitop/data/datasets/) next to jpg/")
    obj = safe_unpickle(path, DataError, "use the original revisitop gnd file")
    if not isinstance(obj, dict) or not {"imlist", "qimlist", "gnd"} <= set(obj):
        raise DataError(f"{path}: expected a dict with 'imlist', 'qimlist' and 'gnd' (revisitop format)")
    if len(obj["gnd"]) != len(obj["qimlist"]):
        raise DataError(f"{path}: {len(obj['gnd'])} gnd entries for {len(obj['qimlist'])} queries")
    return obj


@dataclass
class RetrievalData:
    name: str
    images_dir: Path | None
    imlist: list[str]                  # database image ids (file stem)
    qimlist: list[str]                 # query image ids
    gnd: list[dict[str, Any]]          # per query: bbx (x1, y1, x2, y2) or None, index arrays into imlist
    revisited: bool

    def query_bbx(self, i: int) -> tuple[float, ...] | None:
        b = self.gnd[i].get("bbx")
        return None if b is None else tuple(float(v) for v in b)


def _as_index(values: Any) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=np.int64).reshape(-1)


def _load_revisited(folder: Path, name: str) -> RetrievalData:
    obj = safe_load_gnd(folder / f"gnd_{name}.pkl")
    gnd = [{"bbx": g.get("bbx"), **{k: _as_index(g.get(k)) for k in ("easy", "hard", "junk")}} for g in obj["gnd"]]
    return RetrievalData(name, folder / "jpg", [str(s) for s in obj["imlist"]], [str(s) for s in obj["qimlist"]],
                         gnd, revisited=True)


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: ground-truth list missing; the gt_files folder is incomplete")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load_original(folder: Path, name: str) -> RetrievalData:
    gt = next((folder / d for d in ("gt_files", "lab") if (folder / d).is_dir()), None)
    if gt is None:
        raise DataError(f"{folder}: no gt_files/ (or lab/) ground-truth folder; extract gt_files_170407.tgz "
                        f"(Oxford) or paris_120310.tgz (Paris) there")
    images = check_folder(folder / "jpg", f"{name}/jpg")
    imlist = sorted(p.stem for p in images.glob("*.jpg") if p.stem not in PARIS_BLACKLIST)
    where = {s: i for i, s in enumerate(imlist)}
    qimlist, gnd = [], []
    for qfile in sorted(gt.glob("*_query.txt")):
        q = qfile.name[:-len("_query.txt")]
        fields = qfile.read_text().split()
        if len(fields) != 5:
            raise DataError(f"{qfile}: expected '<image> x1 y1 x2 y2', got {' '.join(fields)!r}")
        # Oxford query files prefix the image with 'oxc1_' (deepcluster strips it the same way).
        image = fields[0][5:] if fields[0].startswith("oxc1_") else fields[0]
        if image not in where:
            raise DataError(f"{qfile}: query image {image!r} is not in {images}")
        qimlist.append(image)
        names = {k: _read_list(gt / f"{q}_{k}.txt") for k in ("good", "ok", "junk")}
        # compute_ap.cpp's n_pos: the set good ∪ ok, names missing from the database (blacklisted Paris images)
        # included
        gnd.append({"bbx": [float(v) for v in fields[1:]], "query_name": q,
                    "n_pos": len(set(names["good"]) | set(names["ok"])),
                    **{k: np.array([where[s] for s in v if s in where], np.int64) for k, v in names.items()}})
    if not gnd:
        raise DataError(f"{gt}: no *_query.txt files")
    return RetrievalData(name, images, imlist, qimlist, gnd, revisited=False)


def load_retrieval_data(folder: Path, name: str) -> RetrievalData:
    """The database, queries and ground truth of `name` stored in `folder`."""
    check_folder(Path(folder), name)
    return _load_revisited(Path(folder), name) if name in REVISITED else _load_original(Path(folder), name)


class RetrievalImages(Dataset):
    """Database or query images as (tensor, index); `transform(image, bbx)` resizes/crops/normalises.

    The bbox is handed to the transform for queries only, so cropping before or after resizing is its decision.
    """

    def __init__(self, data: RetrievalData, split: str, transform: Callable | None):
        self.data, self.split, self.transform = data, split, transform
        self.names = data.qimlist if split == "query" else data.imlist

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int):
        from PIL import Image
        path = self.data.images_dir / f"{self.names[i]}.jpg"
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except OSError as e:
            raise DataError(f"{path}: cannot read image ({e})") from e
        bbx = self.data.query_bbx(i) if self.split == "query" else None
        return (self.transform(img, bbx) if self.transform else img), i

    def __repr__(self) -> str:
        return f"RetrievalImages({self.data.name}/{self.split}, {len(self)} images)"


def _opener(name: str):
    def open_split(folder: Path, split: str, transform: Any) -> Dataset:
        return RetrievalImages(load_retrieval_data(folder, name), split, transform)
    return open_split


for _name, _q, _db in (("roxford5k", 70, 4993), ("rparis6k", 70, 6322), ("oxford5k", 55, 5062),
                       ("paris6k", 55, 6392)):
    register_dataset(DatasetSpec(name=_name, folder=_name, splits=("query", "db"), open=_opener(_name),
                                 manifest={"query": _q, "db": _db}))
