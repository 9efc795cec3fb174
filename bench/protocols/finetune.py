"""End-to-end fine-tuning: every weight of the backbone trained with a new head, as the masked-image-modelling
papers (MAE, BEiT, iBOT, SimMIM, MILAN), MoCo v3 (DeiT's recipe) and DeiT (from random init) report ImageNet.

Recipe pieces are timm's, the ones the papers' own scripts import: `create_transform` (RandAugment, random
erasing), `Mixup` + `SoftTargetCrossEntropy` (else `LabelSmoothingCrossEntropy`), `param_groups_layer_decay`
(BEiT's layer-wise lr decay, as MAE's `util/lr_decay.py`) + AdamW, `CosineLRScheduler` with warmup (per update as
MAE/BEiT/SimMIM, per epoch as DeiT), `ModelEmaV3` where a recipe keeps an EMA, `RepeatAugSampler` (DeiT's
RASampler), drop path through the model constructor. The model is rebuilt from the loaded backbone's
architecture with the preset's drop path and pooling (MAE's `--global_pool`: mean of patch tokens + fc_norm),
the weights copied strictly (only the new head / fc_norm may be missing; the pre-trained final norm is dropped
when global pooling replaces it, as MAE's `del self.norm`), and a ViT's position grid resampled once to the
training resolution with the family's rule (MAE `interpolate_pos_embed`).

lr = base_lr × global batch / lr_base_batch (256 MAE/MILAN, 512 DeiT/SimMIM) or base_lr as is (BEiT/iBOT);
the global batch is reached on fewer GPUs by gradient accumulation (`--micro-batch`); the record holds both.
Evaluation: resize to crop/crop_pct, centre crop, top-1/top-5 after every epoch; `top1`/`top5` are the final
epoch, `top1_max` the best one (the papers print `max_accuracy`; `details.paper_number_is` says which number
the paper's table holds). Architecture-dependent values (ViT-B vs L vs H) are in each preset's `by_arch`,
applied by canonical architecture; the effective preset is recorded. Implementation: _finetune_train.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .._argtypes import NONNEGATIVE_INT, POSITIVE_INT
from ..errors import BenchError
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["FinetunePreset", "effective_preset", "scaled_finetune_lr"]


@dataclass(frozen=True)
class FinetunePreset:
    # optimisation
    base_lr: float = 1e-3
    lr_scaling: str = "linear"            # linear: base_lr × batch / lr_base_batch | none
    lr_base_batch: int = 256              # MAE 256; DeiT / SimMIM 512
    scale_warmup_min_lr: bool = False     # SimMIM scales warmup_lr and min_lr by the same rule
    batch_size: int = 1024                # global (all processes × accumulation)
    epochs: int = 100
    warmup_epochs: float = 5.0
    warmup_lr: float = 0.0
    min_lr: float = 1e-6
    schedule_per: str = "iter"            # iter: per update (MAE, BEiT, SimMIM) | epoch (DeiT's sched.step(epoch))
    warmup_prefix: bool = True            # cosine over the epochs after warmup (MAE); False: timm 0.3's (DeiT)
    weight_decay: float = 0.05
    betas: tuple[float, ...] = (0.9, 0.999)
    opt_eps: float = 1e-8
    layer_decay: float = 0.75             # 1.0: no layer-wise decay (DeiT)
    clip_grad: float = 0.0                # 0: no clipping
    amp_dtype: str = "bfloat16"           # CUDA autocast dtype: bfloat16 | float16 (GradScaler)
    # model
    drop_path: float = 0.1
    global_pool: str = ""                 # "": the architecture's own | avg (mean patch tokens + fc_norm) | token
    head_init_std: float = 2e-5           # trunc_normal_(head.weight, std); bias 0
    head_init_scale: float = 1.0          # BEiT / iBOT init_scale: head weight and bias × this
    model_ema: bool = False
    model_ema_decay: float = 0.99996
    # data
    train_split: str = "train"
    eval_split: str = "val"
    input_size: int = 224
    crop_pct: float = 0.875               # eval: resize to input_size / crop_pct, centre crop
    interpolation: str = "bicubic"
    auto_augment: str = "rand-m9-mstd0.5-inc1"   # "" for none
    color_jitter: float = 0.4             # timm ignores it when auto_augment is set
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.1
    repeated_aug: bool = False            # DeiT's RASampler (3 repeats)
    # reporting and quick runs
    reported: str = "max"                 # what the paper's table holds: max (max_accuracy) | final
    by_arch: dict = field(default_factory=dict)   # {vit-l: {...}}: per-architecture values (canonical arch)
    quick_epochs: int = 2
    quick_batch_size: int = 64
    quick_train_subset: int = 768         # --quick trains on a seeded subset of this many images; 0: all
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, lr_scaling=("linear", "none"), schedule_per=("iter", "epoch"),
                      amp_dtype=("bfloat16", "float16"), global_pool=("", "avg", "token"),
                      reported=("max", "final"), mixup_mode=("batch", "pair", "elem"))
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], not {self.layer_decay}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs})")


def effective_preset(preset: FinetunePreset, arch: str | None) -> FinetunePreset:
    """The preset with its `by_arch` values for this architecture applied (first matching key; a key without
    patch size, 'vit-l', matches every patch size)."""
    from ..reference import arch_matches
    for pattern, over in preset.by_arch.items():
        if arch_matches(str(pattern), arch):
            unknown = set(over) - {f.name for f in dataclasses.fields(preset)} | ({"by_arch"} & set(over))
            if unknown:
                raise BenchError(f"finetune preset by_arch[{pattern}] has unknown keys {sorted(unknown)}")
            return dataclasses.replace(preset, **over)
    return preset


def scaled_finetune_lr(preset: FinetunePreset, batch: int) -> tuple[float, float, float]:
    """(peak lr, warmup start lr, min lr) at global `batch` by the preset's rule (MAE: blr × eff_batch / 256;
    DeiT, SimMIM: × batch / 512, SimMIM scaling warmup and min lr too; BEiT, iBOT: absolute)."""
    factor = batch / preset.lr_base_batch if preset.lr_scaling == "linear" else 1.0
    side = factor if preset.scale_warmup_min_lr else 1.0
    return preset.base_lr * factor, preset.warmup_lr * side, preset.min_lr * side


def _add_arguments(p) -> None:
    p.add_argument("--micro-batch", type=POSITIVE_INT, default=None,
                   help="per-process batch actually run; the preset's global batch is reached by gradient "
                        "accumulation (default: the whole per-process batch at once)")
    p.add_argument("--ckpt-every", type=NONNEGATIVE_INT, default=0,
                   help="also write the resumable run checkpoint every N optimiser updates (default: each epoch)")


def _options(args) -> dict:
    return {k: v for k, v in (("micro_batch", args.micro_batch), ("ckpt_every", args.ckpt_every)) if v}


@register_protocol("finetune", preset_cls=FinetunePreset, accepts_features=False, add_arguments=_add_arguments,
                   options=_options)
def run_finetune(ctx, preset: FinetunePreset) -> ProtocolResult:
    """End-to-end fine-tuning (MAE, BEiT, iBOT, SimMIM, MILAN, MoCo v3/DeiT recipes): top-1/top-5 on val."""
    from ._finetune_train import finetune
    eff = effective_preset(preset, ctx.require_backbone("fine-tuning").report.arch)
    metrics, details = finetune(ctx, eff)
    details["effective_preset"] = dataclasses.asdict(eff)
    headline = ("top1_max", "top1", "top5") if eff.reported == "max" else ("top1", "top5", "top1_max")
    return ProtocolResult(metrics, details, headline=headline, samples=details.pop("_samples", {}))
