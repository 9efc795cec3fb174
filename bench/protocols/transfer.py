"""The 12-dataset transfer benchmark (Kornblith et al. 2019), as in the SimCLR (App. B.8) and BYOL tables.

Linear evaluation (`linusericsson/ssl-transfer:linear.py`, SimCLR App. B.8): frozen features of every split,
computed once (the feature cache) with Resize(224, bicubic, short side) + CenterCrop(224); an L2-regularised
logistic regression fitted with L-BFGS for each of 45 λ = logspace(-6, 5) (sklearn C = 1/λ); λ is chosen on the
validation split by the dataset's metric (first best while λ grows, as ssl-transfer's strict `>`), the
classifier is refit on train+val with it and scored once on test. The test split never selects anything.

Validation splits: the official ones for Aircraft, DTD (split 1), Flowers and VOC2007 (train/val, and trainval
= their union); otherwise a seeded random hold-out of the official training set, either ssl-transfer's 20 %
(`holdout: ssl-transfer`: numpy RandomState(seed).shuffle, the first floor(0.2 n) are val) or BYOL's per-dataset
sizes (`holdout: byol`, `val_sizes`; scaled by the same fraction on data of another size, e.g. miniatures).

Metrics: top-1; mean per-class accuracy for Aircraft, Caltech-101, Flowers and Pets; VOC2007 11-point mAP of
one classifier per class scored by its decision function, by the preset's `voc07_definition`: "devkit" (binary
L2 logistic regression with difficult images left out of the fit, devkit AP with difficult images ignored) or
"ssl-transfer" (its sklearn LogisticRegression(multi_class='multinomial') fitted on each 0/1 column, i.e. a
2-class softmax, with difficult images as negatives, AP over sklearn's precision_recall_curve). A 2-class softmax
with penalty ½(‖w₀‖² + ‖w₁‖²) is minimised at w₀ = −w₁, so it is the binary logistic regression of w = w₁ − w₀
with C doubled, and its decision function w₁·x + b₁ ranks as w·x + b: bench fits that (C·2, reported as C).
The 11-point recall grid is the preset's `recall_grid` (devkit: MATLAB's 0:0.1:1; numpy: np.linspace).
The record has one metric per dataset under its name and `mean` over the datasets run; missing or
incomplete datasets are skipped and listed with the reason. The fine-tune variant is a preset only.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import DATASETS, open_dataset
from ..errors import BenchError, DataError
from ..metrics.detection import RECALL_GRIDS
from ..metrics.transfer import VOC07_DEFINITIONS, transfer_metric
from ..presets import check_choices
from . import ProtocolResult, register_protocol
from .logreg import fit_logreg, fit_logreg_ovr, predict_scores, select_C

__all__ = ["TransferPreset", "TRANSFER_DATASETS", "holdout_split", "select_and_evaluate"]

_logger = logging.getLogger(__name__)

# name → (metric, has an official validation split); SimCLR transfer-table column order.
TRANSFER_DATASETS: dict[str, tuple[str, bool]] = {
    "food101": ("top1", False), "cifar10": ("top1", False), "cifar100": ("top1", False),
    "birdsnap": ("top1", False), "sun397": ("top1", False), "cars": ("top1", False),
    "aircraft": ("mean_per_class_acc", True), "voc2007": ("mAP_11pt", True), "dtd": ("top1", True),
    "pets": ("mean_per_class_acc", False), "caltech101": ("mean_per_class_acc", False),
    "flowers102": ("mean_per_class_acc", True),
}
# The full official training-set size of the datasets without an official val split (BYOL's val sizes are
# fractions of these). Birdsnap: the 47,386 listed training images (a download has fewer).
_FULL_TRAINVAL = {"food101": 75_750, "cifar10": 50_000, "cifar100": 50_000, "birdsnap": 47_386,
                  "sun397": 19_850, "cars": 8_144, "pets": 3_680, "caltech101": 3_060}


@dataclass(frozen=True)
class TransferPreset:
    mode: str = "linear"                                  # linear | finetune
    datasets: tuple[str, ...] = tuple(TRANSFER_DATASETS)
    transform: dict = field(default_factory=lambda: {"resize": 224, "crop": 224, "interpolation": "bicubic"})
    feature_mode: str | None = None
    log10_lambda_range: tuple[float, ...] = (-6.0, 5.0)   # λ = logspace(lo, hi, n), C = 1/λ
    n_lambda: int = 45
    quick_n_lambda: int = 3                               # --quick: the same range, fewer points
    max_iter: int = 1000
    quick_max_iter: int = 50                              # --quick: L-BFGS iterations per fit
    holdout: str = "ssl-transfer"                         # ssl-transfer | byol
    voc07_definition: str = "devkit"                      # devkit | ssl-transfer (fit and AP; module docstring)
    recall_grid: str = "devkit"                           # 11-point recall floats: devkit (0:0.1:1) | numpy
    val_fraction: float = 0.2
    val_sizes: dict = field(default_factory=dict)         # byol: dataset → validation images (full data)
    finetune: dict = field(default_factory=dict)          # fine-tune settings (mode: finetune)
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, mode=("linear", "finetune"), holdout=("ssl-transfer", "byol"),
                      voc07_definition=VOC07_DEFINITIONS, recall_grid=tuple(RECALL_GRIDS))
        unknown = sorted(set(self.datasets) - set(TRANSFER_DATASETS))
        if unknown:
            raise ValueError(f"unknown transfer dataset(s) {unknown}; known: {list(TRANSFER_DATASETS)}")
        if self.holdout == "byol" and set(self.val_sizes) != {d for d, (_, v) in TRANSFER_DATASETS.items() if not v}:
            raise ValueError("holdout byol needs val_sizes for every dataset without an official val split")

    def lambdas(self, quick: bool) -> np.ndarray:
        lo, hi = self.log10_lambda_range
        return np.logspace(lo, hi, self.quick_n_lambda if quick else self.n_lambda)


def holdout_split(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: shuffle 0..n-1 with RandomState(seed), the first n_val are val (ssl-transfer)."""
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    return np.sort(idx[n_val:]), np.sort(idx[:n_val])


def _n_val(preset: TransferPreset, name: str, n: int) -> int:
    if preset.holdout == "ssl-transfer":
        return int(np.floor(preset.val_fraction * n))
    size = int(preset.val_sizes[name])
    return size if n == _FULL_TRAINVAL[name] else max(1, int(round(n * size / _FULL_TRAINVAL[name])))


def _fit_kwargs(metric: str, y: np.ndarray, num_classes: int, max_iter: int, device,
                voc07_definition: str = "devkit") -> tuple[Any, Any, dict]:
    """(fit function, fitting targets, kwargs): multinomial, or VOC07's one-vs-rest on devkit labels: "devkit"
    masks a difficult entry (0) out of that class's loss (neither positive nor negative, as in the devkit),
    "ssl-transfer" makes it a negative (its targets are label == 1)."""
    kw = {"max_iter": max_iter, "device": device}
    if metric == "mAP_11pt" and voc07_definition == "ssl-transfer":
        return fit_logreg_ovr, (y == 1).astype(np.float64), kw
    if metric == "mAP_11pt":
        return fit_logreg_ovr, (y > 0).astype(np.float64), {**kw, "mask": y != 0}
    return fit_logreg, y, {**kw, "num_classes": num_classes}


def _test_samples(metric: str, scores: np.ndarray, labels: np.ndarray):
    """Per-test-image statistics of the dataset's metric (bench.metrics.bootstrap), or None (VOC07 mAP: per-class
    ranking over images, not resampled here)."""
    from ..metrics.bootstrap import mean_samples, miou_samples
    if metric == "mAP_11pt":
        return None
    hit = np.asarray(scores).argmax(1) == np.asarray(labels)
    if metric == "top1":
        return mean_samples(hit)
    # mean per-class accuracy = mean over the classes present of Σ hit·[y = c] / Σ [y = c]: the ratio-of-sums
    # statistic of mIoU with one-hot labels as the "union"
    onehot = np.eye(scores.shape[1], dtype=np.int64)[np.asarray(labels)]
    return miou_samples(onehot * hit[:, None], onehot)


def select_and_evaluate(train, val, test, *, metric: str, lambdas: np.ndarray, num_classes: int,
                        max_iter: int = 1000, device="cpu", voc07_definition: str = "devkit",
                        recall_grid: str = "devkit") -> dict[str, Any]:
    """λ chosen on val, refit on train+val, scored on test; (x, y) pairs in (y: labels or devkit N×20).

    Ties in the validation score go to the smallest λ (largest C): ssl-transfer walks λ upwards and keeps the
    first strictly better one. The fits along the path are warm-started (`select_C`), which moves only where
    L-BFGS stops, not the optimum. C and λ are reported as sklearn's (ssl-transfer's) even where the binary fit
    runs at 2C (its 2-class softmax).
    """
    def score(s, y):
        return transfer_metric(metric, s.cpu().numpy(), y, voc07_definition=voc07_definition, grid=recall_grid)
    scale = 2.0 if metric == "mAP_11pt" and voc07_definition == "ssl-transfer" else 1.0
    fit_fn, y_fit, kw = _fit_kwargs(metric, train[1], num_classes, max_iter, device, voc07_definition)
    _, fit_curve = select_C(train[0], y_fit, val[0], val[1], scale / np.asarray(lambdas), metric_fn=score,
                            fit_fn=fit_fn, **kw)
    curve = {c / scale: v for c, v in fit_curve.items()}
    best_C = max(curve, key=lambda c: (curve[c], c))
    y_tv = np.concatenate([train[1], val[1]])
    fit_fn, y_fit, kw = _fit_kwargs(metric, y_tv, num_classes, max_iter, device, voc07_definition)
    weights = fit_fn(np.concatenate([train[0], val[0]]), y_fit, best_C * scale, **kw)
    test_scores = predict_scores(weights, test[0])
    test_score = score(test_scores, test[1])
    return {"test": test_score, "test_samples": _test_samples(metric, test_scores.cpu().numpy(), test[1]), "lambda": 1.0 / best_C, "C": best_C, "val": curve[best_C],
            "val_curve": [[1.0 / c, curve[c]] for c in sorted(curve, reverse=True)],
            "refit_converged": weights.converged, "refit_iterations": weights.n_iter,
            "lambda_on_grid_edge": best_C in (min(curve), max(curve))}


def _splits(name: str) -> tuple[str, ...]:
    return ("train", "val", "test") if TRANSFER_DATASETS[name][1] else ("trainval", "test")


def _check_present(ctx, name: str) -> dict[str, Any]:
    """Open every split once (cheap) before extracting anything: a missing split or a partial download
    (manifest) raises DataError here, and the dataset is skipped. Returns per-split notes (Birdsnap gaps)."""
    notes = {}
    if ctx.features_dir is not None:
        for split in _splits(name):
            path = ctx.features_dir / name / f"{split}.npz"
            if not path.is_file():
                raise DataError(f"{path}: feature file not found")
        return notes
    if ctx.data_root is None:
        raise DataError("no --data-root")
    for split in _splits(name):
        ds = open_dataset(name, ctx.data_root.path, split, None, mini=ctx.mini)
        if getattr(ds, "missing", 0):
            notes[f"{split}_missing_images"] = int(ds.missing)
    return notes


def _num_classes(ctx, name: str, *labels: np.ndarray) -> int:
    observed = int(max(int(np.max(y)) for y in labels)) + 1
    full = DATASETS.get(name).num_classes or 0
    return observed if ctx.mini or ctx.features_dir is not None else max(full, observed)


def _evaluate(ctx, preset: TransferPreset, name: str) -> tuple[float, dict[str, Any]]:
    metric, official_val = TRANSFER_DATASETS[name]
    feats = {s: ctx.features(s, preset.transform, feature_mode=preset.feature_mode, dataset=name)
             for s in _splits(name)}
    if official_val:
        train, val = feats["train"], feats["val"]
        train, val = (train.features, train.labels), (val.features, val.labels)
        how = "official val split; trainval = train + val"
    else:
        tv = feats["trainval"]
        tr_idx, va_idx = holdout_split(len(tv), _n_val(preset, name, len(tv)), ctx.seed)
        train, val = (tv.features[tr_idx], tv.labels[tr_idx]), (tv.features[va_idx], tv.labels[va_idx])
        how = f"random hold-out ({preset.holdout}), seed {ctx.seed}"
    test = (feats["test"].features, feats["test"].labels)
    k = 20 if metric == "mAP_11pt" else _num_classes(ctx, name, train[1], val[1], test[1])
    res = select_and_evaluate(train, val, test, metric=metric, lambdas=preset.lambdas(ctx.quick), num_classes=k,
                              max_iter=preset.quick_max_iter if ctx.quick else preset.max_iter, device=ctx.device,
                              voc07_definition=preset.voc07_definition, recall_grid=preset.recall_grid)
    samples = res.pop("test_samples")
    detail = {"metric": metric, "validation": how, "n_train": len(train[0]), "n_val": len(val[0]),
              "n_test": len(test[0]), "num_classes": k, **res, "_samples": samples}
    if metric == "mAP_11pt":
        detail.update(voc07_definition=preset.voc07_definition, recall_grid=preset.recall_grid)
    return res["test"], detail


def _dataset_list(ctx, preset: TransferPreset) -> list[str]:
    chosen = ctx.options.get("datasets") or list(preset.datasets)
    unknown = [d for d in chosen if d not in TRANSFER_DATASETS]
    if unknown:
        raise BenchError(f"--datasets: unknown {unknown}; choose from {','.join(TRANSFER_DATASETS)}")
    return chosen


def _download(ctx, names: list[str]) -> None:
    from ..data.transfer import download_transfer_dataset
    if ctx.data_root is None or ctx.mini:
        raise BenchError("--download needs --data-root DIR (a real data folder, not the miniatures)")
    for name in names:
        download_transfer_dataset(name, ctx.data_root.path)


@register_protocol("transfer", preset_cls=TransferPreset, default_dataset="transfer",
                   add_arguments=lambda p: _add_arguments(p), options=lambda a: _options(a))
def run_transfer(ctx, preset: TransferPreset) -> ProtocolResult:
    """Linear transfer to the 12 Kornblith datasets (logistic regression, λ on val, refit on trainval)."""
    if preset.mode == "finetune":
        raise BenchError("transfer mode 'finetune' (SimCLR App. B.8 fine-tuning) is not implemented in this "
                         "version; its settings are recorded in protocols/transfer.yaml; use --preset linear")
    names = _dataset_list(ctx, preset)
    if ctx.options.get("download"):
        _download(ctx, names)
    metrics, per_dataset, skipped = {}, {}, {}
    for name in names:
        try:
            notes = _check_present(ctx, name)
            metrics[name], per_dataset[name] = _evaluate(ctx, preset, name)
            per_dataset[name].update(notes)
        except DataError as e:
            skipped[name] = str(e)
            _logger.warning("transfer: skipping %s: %s", name, e)
    if not metrics:
        raise BenchError(f"transfer: no dataset could be evaluated; {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
    ran = list(metrics)
    samples = {n: s for n in ran if (s := per_dataset[n].pop("_samples")) is not None}
    metrics["mean"] = float(np.mean([metrics[n] for n in ran]))
    details = {"datasets": per_dataset, "skipped": skipped, "mean_over": ran, "classifier": "bench.protocols.logreg (float64 L-BFGS, sklearn's C)",
               "selection": "lambda chosen on the validation split; the test split is used once, after selection",
               "lambdas": preset.lambdas(ctx.quick).tolist()}
    return ProtocolResult(metrics, details=details, headline=("mean", *ran), samples=samples)


def _add_arguments(p) -> None:
    p.add_argument("--datasets", help=f"comma-separated subset of {','.join(TRANSFER_DATASETS)} (default: all)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download the datasets it can into --data-root first")


def _options(args) -> dict[str, Any]:
    names = [d.strip() for d in (args.datasets or "").split(",") if d.strip()]
    return {"datasets": names or None, "download": bool(args.download)}
