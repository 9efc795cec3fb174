"""Instance retrieval on Oxford5k / Paris6k: revisited (ROxf/RPar, E/M/H) and original (mAP over good ∪ ok).

References: filipradenovic/revisitop:python/{evaluate,example_evaluate}.py (metric, query cropping),
facebookresearch/deepcluster:eval_retrieval.py (original protocol, R-MAC + regional PCA-whitening learned on the
other dataset), facebookresearch/dino:eval_image_retrieval.py (CLS, no crop, 224 single-scale Oxford / 512
multi-scale Paris), filipradenovic/cnnimageretrieval-pytorch:cirtorch (GeM, multi-scale extraction).

Nothing is tuned: every setting comes from the preset; whitening is learned on the *other* dataset's database
(Paris for Oxford and vice versa), never on the evaluated one. Ranking is by cosine similarity. With
`--distractors` (e.g. R1M features), distractors only push database images down the ranking, so their number
above each database image is counted chunk by chunk and the full 1M×n_queries similarity matrix never exists.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import sha256_file
from ..data.retrieval import OTHER_DATASET, REVISITED, RetrievalData, RetrievalImages, safe_load_gnd
from ..errors import BenchError, DataError, PresetError
from ..metrics.bootstrap import mean_samples
from ..metrics.retrieval import ORIGINAL_SETUP, REVISITED_SETUPS, retrieval_map
from ..presets import check_choices
from . import ProtocolResult, register_protocol
from ._retrieval_extract import Descriptor, ImagePrep, extract_descriptors

__all__ = ["RetrievalPreset", "rank_of_database", "retrieval_metrics", "fit_whitening", "MINI_IMSIZE"]

_logger = logging.getLogger(__name__)

MINI_IMSIZE = 96   # miniature photographs are ≤ 96 px: describing them at 1024 px would only cost time


@dataclass(frozen=True)
class RetrievalPreset:
    imsize: int = 1024
    resize: str = "resize"                 # resize (max side = imsize, may upsample) | thumbnail (only shrinks)
    interpolation: str = "bilinear"        # bilinear | bicubic | lanczos
    query_crop: str = "before_resize"      # before_resize (revisitop) | after_resize (deepcluster) | none (dino)
    scales: tuple[float, ...] = (1.0,)
    pooling: str = "gem"                   # cls | gem | rmac
    gem_p: float = 3.0
    rmac_levels: int = 3
    whiten: str = "none"                   # none | global (PCA on final vectors) | regional (PCA on R-MAC regions)
    whiten_dim: int = 512
    kappas: tuple[int, ...] = (1, 5, 10)
    distractor_chunk: int = 65_536
    per_dataset: dict = field(default_factory=dict)   # {dataset: {field: value}} applied on top for that dataset
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, resize=("resize", "thumbnail"), interpolation=("bilinear", "bicubic", "lanczos"),
                      query_crop=("before_resize", "after_resize", "none"), pooling=("cls", "gem", "rmac"),
                      whiten=("none", "global", "regional"))
        if self.whiten == "regional" and (self.pooling != "rmac" or len(self.scales) != 1):
            raise ValueError("whiten: regional needs pooling: rmac at a single scale (deepcluster)")
        if not self.scales or min(self.scales) <= 0 or self.imsize < 1:
            raise ValueError("scales must be positive and imsize ≥ 1")

    def for_dataset(self, dataset: str) -> "RetrievalPreset":
        extra = self.per_dataset.get(dataset, {})
        unknown = set(extra) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise PresetError(f"per_dataset.{dataset}: unknown key(s) {sorted(unknown)}")
        if "scales" in extra:
            extra = {**extra, "scales": tuple(float(s) for s in extra["scales"])}
        return dataclasses.replace(self, **extra)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--distractors", help="distractor features (.npz with 'features', or a folder holding "
                                         "distractors.npz), appended to the database ranking (e.g. R1M)")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"distractors": str(Path(args.distractors).resolve()) if args.distractors else None}


# ---------------------------------------------------------------- features


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _read_npz(path: Path, key: str = "features") -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found; retrieval --features needs query.npz, db.npz and gnd.pkl")
    try:
        with np.load(path) as z:
            x = z[key]
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: expected an npz with array {key!r} ({e})") from e
    if x.ndim != 2 or not np.isfinite(x).all():
        raise DataError(f"{path}: {key!r} must be a finite N×D array, got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def _features_from_dir(ctx, preset: RetrievalPreset) -> tuple[dict, dict, RetrievalData, dict | None]:
    d = Path(ctx.features_dir)
    obj = safe_load_gnd(d / "gnd.pkl")
    data = RetrievalData(ctx.dataset, None, list(obj["imlist"]), list(obj["qimlist"]), list(obj["gnd"]),
                         revisited=ctx.dataset in REVISITED)
    q, db = {"features": _read_npz(d / "query.npz")}, {"features": _read_npz(d / "db.npz")}
    if len(q["features"]) != len(data.qimlist) or len(db["features"]) != len(data.imlist):
        raise DataError(f"{d}: query.npz/db.npz rows ({len(q['features'])}/{len(db['features'])}) differ from "
                        f"gnd.pkl's qimlist/imlist ({len(data.qimlist)}/{len(data.imlist)})")
    white = None
    if preset.whiten == "regional":
        raise BenchError("--features holds aggregated vectors; regional whitening needs images (use a backbone)")
    if preset.whiten == "global":
        white = {"features": _read_npz(d / "whiten.npz")}
    for split in ("query", "db") + (("whiten",) if white else ()):
        p = d / f"{split}.npz"
        ctx.inputs[f"{ctx.dataset}/{split}"] = {"source": "features", "path": str(p), "sha256": sha256_file(p),
                                                "count": len((q if split == "query" else db if split == "db"
                                                              else white)["features"])}
    return q, db, data, white


def _extract(ctx, preset: RetrievalPreset, dataset: str, splits: tuple[str, ...]):
    from ..data import open_dataset
    backbone = ctx.require_backbone("retrieval from images")
    pre = backbone.preprocessing
    imsize = ctx.resolution or (min(preset.imsize, MINI_IMSIZE) if ctx.mini else preset.imsize)
    prep = ImagePrep(imsize, preset.resize, preset.interpolation, preset.query_crop, tuple(pre.mean), tuple(pre.std))
    desc = Descriptor(preset.pooling, preset.gem_p, preset.rmac_levels, preset.scales,
                      regional=preset.whiten == "regional")
    out = []
    for split in splits:
        images = open_dataset(dataset, ctx.data_root.path, split, prep, mini=ctx.mini)
        arrays = extract_descriptors(backbone, images, prep, desc, cache_dir=ctx.cache_dir, device=ctx.device,
                                     workers=ctx.workers, key={"dataset": dataset, "split": split,
                                                               "root": str(ctx.data_root.path)})
        n = len(arrays.get("offsets", arrays.get("features"))) - ("offsets" in arrays)
        ctx.inputs[f"{dataset}/{split}"] = {"source": "extracted", "count": n, "imsize": imsize,
                                            "descriptor": dataclasses.asdict(desc)}
        out.append(arrays)
    return out, images.data if isinstance(images, RetrievalImages) else None


# ---------------------------------------------------------------- whitening, ranking, metrics


def fit_whitening(train: np.ndarray, dim: int, seed: int = 0):
    """PCA-whitening (sklearn PCA, whiten=True) fit on `train`; dim capped by the sample count and the width."""
    from sklearn.decomposition import PCA
    n_comp = min(dim, train.shape[0], train.shape[1])
    return PCA(n_components=n_comp, whiten=True, svd_solver="full", random_state=seed).fit(train)


def _apply_whitening(pca, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Whitened, L2-normalised vectors; regional: whiten + L2 each region, sum per image, L2 (deepcluster `rmac`)."""
    if "regions" in arrays:
        regions = _l2(pca.transform(arrays["regions"]))
        return _l2(np.add.reduceat(regions, arrays["offsets"][:-1], axis=0))
    return _l2(pca.transform(_l2(arrays["features"])))


def _plain(arrays: dict[str, np.ndarray]) -> np.ndarray:
    if "regions" in arrays:
        return _l2(np.add.reduceat(arrays["regions"], arrays["offsets"][:-1], axis=0))
    return _l2(arrays["features"])


def rank_of_database(q: np.ndarray, db: np.ndarray, distractors: np.ndarray | None = None, *,
                     chunk: int = 65_536, device: str | torch.device = "cpu") -> np.ndarray:
    """0-based rank of every database image for every query (n_q × n_db), by cosine similarity (inputs L2-normed).

    Distractors rank among the database images: each database image moves down by the number of distractors
    more similar to the query, counted per chunk with a sorted search, so memory stays O(n_q × chunk).
    Ties in similarity keep list order: database images by index, a database image before an equally similar
    distractor (a stable sort of database + distractors; revisitop's np.argsort leaves tie order to numpy).
    """
    qt, dbt = torch.as_tensor(q, device=device), torch.as_tensor(db, device=device)
    sim = qt @ dbt.T
    order = torch.argsort(-sim, dim=1, stable=True)
    rank_of = torch.empty_like(order)
    rank_of.scatter_(1, order, torch.arange(sim.shape[1], device=sim.device).expand_as(order).contiguous())
    if distractors is not None:
        for start in range(0, len(distractors), chunk):
            block = torch.as_tensor(distractors[start:start + chunk], device=device)
            s, _ = (qt @ block.T).sort(dim=1)
            rank_of += block.shape[0] - torch.searchsorted(s, sim.contiguous(), right=True)
    return rank_of.cpu().numpy()


def retrieval_metrics(rank_of: np.ndarray, data: RetrievalData, kappas: tuple[int, ...]) -> tuple[dict, dict]:
    """Percent metrics: mAP_E/M/H and mP@k_E/M/H (revisited, revisitop) or mAP and mP@k over the set good ∪ ok
    (original, compute_ap.cpp's counting). details["_samples"]: each mAP's per-query AP (queries with positives),
    what its bootstrap interval resamples."""
    setups = REVISITED_SETUPS if data.revisited else ORIGINAL_SETUP
    metrics, details = {}, {"per_query_ap": {}, "queries_without_positives": {}, "_samples": {}}
    results = retrieval_map(data.gnd, setups, kappas, rank_of=rank_of, cpp_original=not data.revisited)
    for setup, (m, aps, pr, _) in results.items():
        suffix = f"_{setup}" if setup else ""
        metrics[f"mAP{suffix}"] = 100 * m
        if np.isfinite(aps).any():
            details["_samples"][f"mAP{suffix}"] = mean_samples(aps[np.isfinite(aps)])
        for k, p in zip(kappas, pr):
            metrics[f"mP@{k}{suffix}"] = 100 * float(p)
        details["per_query_ap"][setup or "original"] = [None if np.isnan(a) else round(100 * float(a), 4)
                                                        for a in aps]
        details["queries_without_positives"][setup or "original"] = int(np.isnan(aps).sum())
    return metrics, details


def _load_distractors(ctx) -> np.ndarray | None:
    path = ctx.options.get("distractors")
    if not path:
        return None
    p = Path(path)
    p = p / "distractors.npz" if p.is_dir() else p
    x = _read_npz(p)
    ctx.inputs["distractors"] = {"source": "features", "path": str(p), "sha256": sha256_file(p), "count": len(x)}
    return x


@register_protocol("retrieval", preset_cls=RetrievalPreset, default_dataset="roxford5k",
                   add_arguments=_add_arguments, options=_options)
def run_retrieval(ctx, preset: RetrievalPreset) -> ProtocolResult:
    """Instance retrieval on (R)Oxford5k / (R)Paris6k: mAP (E/M/H revisited, good ∪ ok original)."""
    if ctx.dataset not in OTHER_DATASET:
        raise BenchError(f"retrieval runs on {', '.join(OTHER_DATASET)}, not {ctx.dataset!r}")
    preset = preset.for_dataset(ctx.dataset)
    white_on = None
    if ctx.features_dir is not None:
        q, db, data, white = _features_from_dir(ctx, preset)
    else:
        (q, db), data = _extract(ctx, preset, ctx.dataset, ("query", "db"))
        white = None
        if preset.whiten != "none":   # learned on the other dataset's database, as deepcluster does
            white_on = OTHER_DATASET[ctx.dataset]
            (white,), _ = _extract(ctx, preset, white_on, ("db",))
    distractors = _load_distractors(ctx)
    if distractors is not None and preset.whiten == "regional":
        raise BenchError("--distractors are aggregated vectors; they cannot be regionally whitened "
                         "(use a preset with whiten: global or none)")
    details: dict[str, Any] = {"effective_preset": {k: v for k, v in dataclasses.asdict(preset).items()
                                                    if k not in ("per_dataset", "paper", "source", "notes")},
                               "n_queries": len(data.qimlist), "n_db": len(data.imlist),
                               "protocol": "revisited" if data.revisited else "original"}
    if white is not None:
        # fit on exactly what gets whitened: L2-normalised region vectors or L2-normalised image vectors
        pca = fit_whitening(white["regions"] if "regions" in white else _l2(white["features"]), preset.whiten_dim,
                            ctx.seed)
        qv, dbv = _apply_whitening(pca, q), _apply_whitening(pca, db)
        dv = _apply_whitening(pca, {"features": distractors}) if distractors is not None else None
        width = (white["regions"] if "regions" in white else white["features"]).shape[1]
        rank_deficient = bool(pca.n_samples_ <= width)
        details["whitening"] = {"learned_on": white_on or "whiten.npz", "dim": int(pca.n_components_),
                                "n_train_vectors": int(pca.n_samples_), "kind": preset.whiten,
                                "rank_deficient": rank_deficient}
        if rank_deficient:
            # fewer vectors than dimensions: the smallest retained directions are sampling noise that whitening
            # scales up to unit variance, which can bury the signal (the miniatures' 114-image databases do this)
            _logger.warning("whitening learned on %d vectors of %d dimensions is rank-deficient; its mAP can "
                            "fall below unwhitened features (--set whiten=none)", pca.n_samples_, width)
    else:
        qv, dbv, dv = _plain(q), _plain(db), _l2(distractors) if distractors is not None else None
    if dv is not None and dv.shape[1] != dbv.shape[1]:
        raise DataError(f"distractor features are {dv.shape[1]}-d but the database is {dbv.shape[1]}-d")
    rank_of = rank_of_database(qv, dbv, dv, chunk=preset.distractor_chunk, device=ctx.device)
    metrics, more = retrieval_metrics(rank_of, data, preset.kappas)
    samples = more.pop("_samples")
    details.update(more, n_distractors=0 if dv is None else len(dv))
    headline = ("mAP_M", "mAP_H") if data.revisited else ("mAP",)
    return ProtocolResult(metrics, details=details, headline=headline, samples=samples)
