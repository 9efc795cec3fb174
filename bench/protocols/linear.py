"""Linear evaluation of a frozen backbone: the papers' augmented probes, and a many-heads grid on cached features.

`mode: augmented` (presets mocov2, mocov3, mocov3_rn50, simclr, byol, dino, dino_vitb, mae) trains one linear
head on features of augmented images, recomputed every step by the frozen backbone in eval mode (BN running
stats, no dropout), exactly with the paper code's crop, interpolation, optimiser, lr scaling rule, batch,
epochs, schedule and head (see protocols/linear.yaml for the file each comes from). The head is evaluated on
the eval split after every epoch. The record's `top1`/`top5` are the FINAL epoch; `top1_max`/`top5_at_max` are
the best epoch by top-1, which is what MoCo, MoCo v3, DINO and MAE print and report — a choice made on the
evaluation split itself (details.paper_reports says which number the paper used). Implementation:
bench/protocols/_linear_train.py.

`mode: grid` (preset fast) caches centre-crop features once and trains many heads together (13 DINOv2
learning rates × weight decays) in one pass over the cache, selects on a seeded hold-out of train, refits the
winner on all of train and scores it once on the eval split. Implementation: bench/protocols/_linear_grid.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .._argtypes import POSITIVE_INT
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["LinearPreset", "DINOV2_LRS"]

DINOV2_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


def _default_train_transform() -> dict:
    return {"crop": "torchvision", "size": 224, "scale": [0.08, 1.0], "ratio": [0.75, 1.3333333333333333],
            "interpolation": "bilinear", "flip": True}


@dataclass(frozen=True)
class LinearPreset:
    mode: str = "augmented"                 # augmented | grid
    feature_mode: str | None = None         # None: the backbone's own (CLS / pool)
    train_split: str = "train"
    eval_split: str = "val"
    train_transform: dict = field(default_factory=_default_train_transform)
    eval_transform: dict = field(default_factory=lambda: {"resize": 256, "crop": 224, "interpolation": "bilinear"})
    normalize: bool = True                  # False: pixels stay in [0, 1] (SimCLR)
    # augmented mode
    optimizer: str = "sgd"                  # sgd | nesterov | lars
    momentum: float = 0.9
    base_lr: float = 0.1
    lr_scaling: str = "linear"              # linear: base × batch/256 | none | sqrt
    batch_size: int = 256                   # global batch, over all processes
    weight_decay: float = 0.0
    epochs: int = 100
    schedule: str = "cosine"                # constant | step | cosine | warmup_cosine
    schedule_per: str = "epoch"             # epoch | iter
    warmup_epochs: float = 0.0
    milestones: tuple[int, ...] = ()
    head_init: str = "normal"               # normal | trunc_normal | zeros  (weights; bias always 0)
    head_init_std: float = 0.01
    head_bn: bool = False                   # MAE: BatchNorm1d(affine=False, eps=1e-6) before the linear layer
    drop_last: bool = False
    reported: str = "max"                   # what the paper reports: max (over epochs, on val) | final
    quick_epochs: int = 2
    quick_batch_size: int = 128
    quick_train_images: int = 512           # --quick trains on a seeded subset of this many images
    # grid mode
    grid_lrs: tuple[float, ...] = DINOV2_LRS
    grid_weight_decays: tuple[float, ...] = (0.0, 1e-6, 1e-5, 1e-4)
    grid_epochs: int = 10
    grid_batch_size: int = 1024
    holdout_fraction: float = 0.1
    holdout_seed: int = 0
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, mode=("augmented", "grid"), optimizer=("sgd", "nesterov", "lars"),
                      schedule_per=("epoch", "iter"), reported=("max", "final"),
                      head_init=("normal", "trunc_normal", "zeros"))
        if self.batch_size < 1 or self.epochs < 1 or self.grid_epochs < 1:
            raise ValueError("batch_size, epochs and grid_epochs must be ≥ 1")


@register_protocol("linear", preset_cls=LinearPreset, accepts_features=True,
                   add_arguments=lambda p: p.add_argument(
                       "--micro-batch", type=POSITIVE_INT, default=None,
                       help="per-process batch actually run; the preset's batch is reached by gradient "
                            "accumulation (default: the whole per-process batch at once)"),
                   options=lambda a: {"micro_batch": a.micro_batch} if a.micro_batch else {})
def run_linear(ctx, preset: LinearPreset) -> ProtocolResult:
    """Linear probe: the papers' augmented recipes on a frozen backbone, or a many-heads grid on cached features."""
    if preset.mode == "grid":
        from ._linear_grid import run_grid
        return run_grid(ctx, preset)
    from ._linear_train import run_augmented
    return run_augmented(ctx, preset)
