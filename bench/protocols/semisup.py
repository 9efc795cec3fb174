"""Semi-supervised ImageNet: fine-tune the whole backbone on 1% / 10% of the labels (or a logreg on frozen features).

Subsets: SimCLR's `imagenet_subsets/{1,10}percent.txt` (12,811 / 128,116 images, class-balanced), found under
`<data-root>/imagenet/`, in the cache, downloaded when online, or given with `--subset-file`; `--fraction F` draws a
seeded class-balanced subset for other datasets. The record holds the list's sha256 (or the seed).
Evaluation is on the full val split, top-1 and top-5.

Presets (protocols/semisup.yaml): SimCLR v1 (App. B.5: Nesterov, lr 0.05×bs/256, no wd, 60 / 30 epochs),
SimCLR v2 (LARS, lr 0.005·√bs, 60 epochs), BYOL (App. C: Nesterov, lr × epochs grid selected on a held-out
10,009-image local validation split of train), SwAV (`eval_semisup.py`: SGD, trunk / head lr, 20 epochs, steps at
12 and 16, best epoch on val), and `logreg` (frozen features + the logreg protocol's L-BFGS on the subset).
Which number each paper reported (final epoch or best epoch on val — the latter selects on the reported split) is
recorded in `details.paper_reports`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._argtypes import float_range
from ..data import cache_dir
from ..data.subsets import (SIMCLR_SUBSET_SIZES, balanced_fraction, find_subset_file, read_subset_list,
                            subset_indices)
from ..errors import BenchError
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["SemisupPreset", "resolve_subset", "effective_preset"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SemisupPreset:
    mode: str = "finetune"                    # finetune | logreg
    optimizer: str = "nesterov"               # sgd | nesterov | lars
    base_lr: float = 0.05
    lr_scaling: str = "linear"                # linear: base × bs/256; sqrt: base × √bs; none
    head_lr: float | None = None              # SwAV's lr_last_layer (absolute); None = same as the trunk
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 4096
    epochs: int = 30
    schedule: str = "constant"                # constant | step | cosine | warmup_cosine
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    head_init: str = "zeros"                  # zeros (SimCLR) | normal (N(0, 0.01)) | default (PyTorch's)
    head_init_std: float = 0.01
    head_bn: bool = False
    normalize: bool = True                    # False: inputs stay in [0, 1] whatever the backbone says
    feature_mode: str | None = None           # None: the backbone family's feature (pooled / CLS)
    train_transform: dict = field(default_factory=lambda: {"crop": "inception", "size": 224,
                                                           "interpolation": "bicubic", "flip": True})
    eval_transform: dict = field(default_factory=lambda: {"resize": 256, "crop": 224, "interpolation": "bicubic"})
    report: str = "final"                     # final | max (best epoch on val, as SwAV's best_acc)
    by_percent: dict = field(default_factory=dict)   # {1: {epochs: 60}, 10: {...}}: the paper's per-subset values
    grid: dict = field(default_factory=dict)  # BYOL: {base_lr: [...], epochs: [...]} selected on a holdout
    holdout_images: int = 10_009              # BYOL's local validation split, scaled to the train size
    logreg_preset: str = "dinov2"             # mode logreg: which logreg preset fits the head
    quick_epochs: int = 1
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, mode=("finetune", "logreg"), report=("final", "max"))


def _add_arguments(p) -> None:
    p.add_argument("--labels-percent", type=int, choices=[1, 10, 100], default=10,
                   help="SimCLR's 1%% or 10%% ImageNet list (default 10); 100: every train image")
    p.add_argument("--subset-file", help="a subset list in SimCLR's format (one train file name per line)")
    p.add_argument("--fraction", type=float_range(0, 1, lo_open=True),
                   help="seeded class-balanced fraction instead of a list (other datasets)")


def _options(args) -> dict:
    return {"labels_percent": args.labels_percent, "subset_file": args.subset_file, "fraction": args.fraction}


def effective_preset(preset: SemisupPreset, percent: float) -> SemisupPreset:
    """The preset with its per-subset values applied (SimCLR's 60 epochs for 1%, 30 for 10%, SwAV's lrs)."""
    key = int(percent) if float(percent).is_integer() else percent
    over = preset.by_percent.get(key) or preset.by_percent.get(str(key)) or {}
    unknown = set(over) - {f.name for f in dataclasses.fields(preset)}
    if unknown:
        raise BenchError(f"semisup preset by_percent[{key}] has unknown keys {sorted(unknown)}")
    return dataclasses.replace(preset, **over)


def resolve_subset(ctx, samples: list[tuple[str, int]]) -> tuple[np.ndarray, dict]:
    """Indices of the labelled subset into the train ImageFolder, and what to record about it."""
    opts = ctx.options
    targets = np.array([t for _, t in samples])
    if opts.get("fraction"):
        idx = balanced_fraction(targets, opts["fraction"], ctx.seed)
        return idx, {"kind": "fraction", "percent": 100 * opts["fraction"], "seed": ctx.seed, "count": len(idx)}
    percent = opts.get("labels_percent") or 10
    if percent == 100 and not opts.get("subset_file"):
        return np.arange(len(samples)), {"kind": "all", "percent": 100, "count": len(samples)}
    if opts.get("subset_file"):
        path = Path(opts["subset_file"])
    else:
        if ctx.dataset != "imagenet":
            raise BenchError(f"no SimCLR list exists for {ctx.dataset}; pass --fraction F or --subset-file PATH")
        path = find_subset_file(percent, ctx.data_root.path, cache_dir() / "subsets")
    from .._io import sha256_file
    names = read_subset_list(path)
    expected = None if ctx.mini or opts.get("subset_file") else SIMCLR_SUBSET_SIZES.get(percent)
    idx = subset_indices(samples, names, path, expected=expected)
    return idx, {"kind": "list", "percent": percent, "path": str(path), "sha256": sha256_file(path),
                 "count": len(idx)}


def _requested_percent(ctx) -> float:
    opts = ctx.options
    return 100 * opts["fraction"] if opts.get("fraction") else (opts.get("labels_percent") or 10)


def _train_samples(ctx) -> list[tuple[str, int]]:
    """(file, label) of the train split in feature-row order: from the images when a data root is known; with
    --features alone, the labels only (enough for --fraction and 100%; a SimCLR list selects by file name)."""
    from torchvision.datasets import ImageFolder
    if ctx.data_root is not None:
        train_root = ctx.open_images("train", None)
        if not isinstance(train_root, ImageFolder):
            raise BenchError(f"semisup needs an ImageFolder-style train split; {ctx.dataset} is not one")
        if ctx.features_dir is not None:   # rows are matched to files by position: they must be the same split
            labels = np.load(Path(ctx.features_dir) / "train.npz")["labels"]
            if len(labels) != len(train_root.samples) or any(int(a) != b for a, (_, b) in zip(labels,
                                                                                          train_root.samples)):
                raise BenchError(f"{ctx.features_dir}/train.npz: its {len(labels)} rows are not the train images of "
                                 f"{ctx.data_root.path} ({len(train_root.samples)}); pass the --data-root the "
                                 f"features were extracted from")
        return train_root.samples
    opts = ctx.options
    if not opts.get("fraction") and (opts.get("subset_file") or (opts.get("labels_percent") or 10) != 100):
        raise BenchError("semisup --features: a label list (--labels-percent 1/10, --subset-file) selects images by "
                         "file name; add --data-root DIR (the images the features came from) or use --fraction F")
    labels = np.load(Path(ctx.features_dir) / "train.npz")["labels"]
    return [("", int(t)) for t in labels]


@register_protocol("semisup", preset_cls=SemisupPreset, accepts_features=True, add_arguments=_add_arguments,
                   options=_options)
def run_semisup(ctx, preset: SemisupPreset) -> ProtocolResult:
    """Fine-tune on 1% / 10% of ImageNet labels (SimCLR, SimCLR v2, BYOL, SwAV) or logreg on the subset; the
    logreg mode also runs on `--features DIR` (frozen features are all it reads)."""
    from ._semisup_train import finetune, logreg_on_subset
    if ctx.backbone is None and effective_preset(preset, _requested_percent(ctx)).mode != "logreg":
        raise BenchError("semisup: this preset fine-tunes the backbone and needs --model/--ckpt, not --features "
                         "(the logreg preset runs on --features)")
    samples = _train_samples(ctx)
    idx, subset = resolve_subset(ctx, samples)
    eff = effective_preset(preset, subset["percent"])
    if eff.mode == "logreg":
        metrics, details = logreg_on_subset(ctx, eff, idx)
    else:
        metrics, details = finetune(ctx, eff, idx, samples)
    # label_percent is what the leaderboard's label-efficiency plot reads (always a percentage)
    details.update(subset=subset, label_percent=subset["percent"], effective_preset=dataclasses.asdict(eff))
    return ProtocolResult(metrics, details, headline=("top1", "top5"), samples=details.pop("_samples", {}))


