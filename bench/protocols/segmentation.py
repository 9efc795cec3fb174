"""ADE20K semantic segmentation: UperNet fine-tuning (BEiT / MAE / iBOT) and frozen linear heads (DINOv2, iBOT).

Spec: shared/research/protocols.md §5. UperNet presets fine-tune the whole backbone with BEiT's recipe (AdamW,
layer-wise lr decay 0.65, warmup 1500 + poly, 160k iterations of batch 16 at 512², ViT pyramid from blocks
[3, 5, 7, 11], UPerHead 768 + auxiliary FCNHead ×0.4) and differ in the lr and output norm (BEiT 7e-4, MAE 1e-4,
iBOT 8e-5 with out_with_norm). The DINOv2 linear preset freezes the backbone and trains BatchNorm + 1×1 conv on
the last block's normed patch tokens (40k iterations, lr 1e-3, wd 1e-4). CNN backbones feed their last four
stages (strides 4–32) instead of the ViT pyramid. Evaluation: single scale, sliding 512 windows at stride 341,
mIoU/mAcc/aAcc from one confusion matrix over the validation set. Nothing is selected on the validation set: the
model after the last iteration is evaluated once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._io import sha256_json
from ..distributed import dist_info
from ..errors import BenchError
from ..metrics.bootstrap import miou_samples
from ..precision import amp_key
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["SegPreset", "run_segmentation", "build_seg_model"]


@dataclass(frozen=True)
class SegPreset:
    head: str = "upernet"                       # upernet | linear
    out_indices: tuple[int, ...] = (3, 5, 7, 11)    # ViT blocks (negative = from the end); CNNs use their stages
    out_norm: bool = False                      # pass block outputs through the final norm (iBOT, DINOv2)
    in_index: tuple[int, ...] = (3,)            # linear head: which of the 4 maps are concatenated
    linear_bn: bool = True                      # linear head: BN before the 1×1 conv (DINOv2 BNHead); False:
                                                # mmseg FCNHead(num_convs=0), the 1×1 conv alone (iBOT)
    layer_scale_init: float | None = None       # ViT blocks without LayerScale get a trainable one at this value
                                                # (mmseg MAE backbone init_values=1.0); None: none added
    freeze_backbone: bool = False
    level_proj: int = 0                         # hierarchical backbones: a 1×1 conv (with bias, no norm) per
                                                # stage to this width before the head (UM-MAE's PVT/Swin fpn1..4,
                                                # fpn_out_dim 768); 0: the stages go to the head as they are
    channels: int = 768
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    aux_weight: float = 0.4                     # FCNHead on pyramid level 2; 0 = no auxiliary head
    aux_channels: int = 256
    num_classes: int = 150
    crop_size: int = 512
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    photometric: bool = True
    test_stride: int = 341
    iterations: int = 160_000
    batch_size: int = 16                        # total over all GPUs (2/GPU × 8)
    lr: float = 7e-4
    weight_decay: float = 0.05
    layer_decay: float = 0.65
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr_ratio: float = 0.0
    drop_path: float = 0.1
    fp16: bool = True                           # AMP on CUDA
    checkpoint_every: int = 2000
    quick_iterations: int = 40                  # --quick: iterations, head width, batch (never comparable)
    quick_channels: int = 64
    quick_batch_size: int = 4
    train_split: str = "train"
    eval_split: str = "val"
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, head=("upernet", "linear"))
        if len(self.out_indices) != 4:
            raise ValueError(f"out_indices must name 4 blocks, got {self.out_indices}")
        if not set(self.in_index) <= {0, 1, 2, 3}:
            raise ValueError(f"in_index must index the 4 feature maps, got {self.in_index}")


@dataclass(frozen=True)
class _Geometry:
    crop: int
    scale: tuple[int, int]
    stride: int
    iterations: int
    channels: int
    batch_size: int


def _geometry(ctx, p: SegPreset) -> _Geometry:
    """The preset's sizes, or on miniatures crops of ctx.resolution/64 px with the same test/crop proportions."""
    from ..runner import MINI_RESOLUTION
    crop = ctx.resolution or (MINI_RESOLUTION if ctx.mini else p.crop_size)
    f = crop / p.crop_size
    scale = (round(p.scale[0] * f), round(p.scale[1] * f))
    stride = max(1, round(p.test_stride * f))
    if ctx.quick:
        return _Geometry(crop, scale, stride, min(p.iterations, p.quick_iterations), p.quick_channels,
                         min(p.batch_size, p.quick_batch_size))
    return _Geometry(crop, scale, stride, p.iterations, p.channels, p.batch_size)


def build_seg_model(backbone, p: SegPreset, crop: int, channels: int):
    """SegModel for the preset: ViT → pyramid + UPerHead, CNN stages → UPerHead, or the linear BN head."""
    import torch
    from ._segmentation_model import BackboneMaps, BNHead, FCNHead, SegModel, UPerHead, ViTPyramid, set_drop_path
    model = backbone.model
    maps = BackboneMaps(model, p.out_indices, p.out_norm, frozen=p.freeze_backbone)
    if maps.vit:
        if hasattr(model, "set_input_size"):   # pos_embed resampled to the crop's grid, with the family's rule
            from ..backbones.pos_embed import set_vit_input_size
            set_vit_input_size(model, (crop, crop))
        if not p.freeze_backbone and p.drop_path > 0:
            set_drop_path(model, p.drop_path)
        if p.layer_scale_init is not None:
            from ._segmentation_model import add_layer_scale
            add_layer_scale(model, p.layer_scale_init)
    elif p.layer_scale_init is not None:
        raise BenchError(f"preset sets layer_scale_init={p.layer_scale_init} (a ViT recipe) but the backbone is "
                         f"{type(model).__name__}; use a ViT or --set layer_scale_init=null")
    else:
        _prepare_pyramid(model, p, crop)
    with torch.no_grad():
        was = model.training
        chans = [m.shape[1] for m in maps.eval()(torch.zeros(1, 3, crop, crop))]
        model.train(was)
    neck = ViTPyramid(chans[0]) if maps.vit and p.head == "upernet" else None
    if p.level_proj > 0:
        if maps.vit:
            raise BenchError(f"level_proj={p.level_proj} projects the stages of a hierarchical backbone (PVT, "
                             f"Swin); {type(model).__name__} is a plain ViT: --set level_proj=0")
        from ._segmentation_model import LevelProjection
        neck, chans = LevelProjection(chans, p.level_proj), [p.level_proj] * len(chans)
    if p.head == "linear":
        return SegModel(maps, BNHead(chans, p.in_index, p.num_classes, bn=p.linear_bn), neck)
    aux = FCNHead(chans[2], p.aux_channels, p.num_classes) if p.aux_weight > 0 else None
    return SegModel(maps, UPerHead(chans, channels, p.num_classes, p.pool_scales, p.dropout), neck, aux)


def _prepare_pyramid(model, p: SegPreset, crop: int) -> None:
    """Pyramid ViTs (timm Swin, PVT v2): Swin's input size set to the crop (its attention windows and masks),
    stochastic depth rising to `drop_path` over the transformer blocks (UM-MAE drop_path_rate 0.1). ResNet
    blocks have no drop_path1/drop_path2, so CNNs are left as they are."""
    from ._segmentation_model import set_block_drop_path
    if hasattr(model, "set_input_size") and hasattr(model, "layers"):
        model.set_input_size(img_size=(crop, crop))
    if not p.freeze_backbone and p.drop_path > 0:
        set_block_drop_path(model, p.drop_path)


def _run_dir(ctx, p: SegPreset, geo: _Geometry) -> Path | None:
    if ctx.cache_dir is None:
        return None
    key = {"preset": asdict(p), "geometry": asdict(geo), "weights": ctx.backbone.weights_id, "dataset": ctx.dataset,
           "data_root": str(ctx.data_root.path), "seed": ctx.seed, "quick": ctx.quick, "amp": amp_key(ctx.amp)}
    return Path(ctx.cache_dir) / "segmentation" / sha256_json(key)[:20]


def _datasets(ctx, p: SegPreset, geo: _Geometry):
    from ._segmentation_transforms import SegTestTransform, SegTrainTransform
    pre = ctx.backbone.preprocessing
    train = ctx.open_images(p.train_split, SegTrainTransform(geo.crop, geo.scale, p.ratio_range, p.cat_max_ratio,
                                                             pre.mean, pre.std, p.photometric))
    val = ctx.open_images(p.eval_split, SegTestTransform(geo.scale, pre.mean, pre.std))
    for split, ds in ((p.train_split, train), (p.eval_split, val)):
        ctx.inputs[f"{ctx.dataset}/{split}"] = {"source": "images", "count": len(ds)}
    return train, val


@register_protocol("segmentation", preset_cls=SegPreset, default_dataset="ade20k", accepts_features=False,
                   add_arguments=lambda ap: ap.add_argument(
                       "--backend", choices=("native", "mmseg"), default="native",
                       help="native (this package) or mmseg (mmsegmentation, when installed)"),
                   options=lambda a: {"backend": a.backend})
def run_segmentation(ctx, preset: SegPreset) -> ProtocolResult:
    """ADE20K semantic segmentation: UperNet fine-tuning or a linear head; mIoU, mAcc, aAcc (single scale)."""
    if ctx.options.get("backend", "native") == "mmseg":
        return _run_mmseg(ctx, preset)
    import torch
    from ..metrics.segmentation import segmentation_scores
    from ._segmentation_optim import layer_decay_groups
    from ._segmentation_train import TrainConfig, evaluate_segmentation, train_segmentation
    backbone = ctx.require_backbone("segmentation")
    geo = _geometry(ctx, preset)
    train_set, val_set = _datasets(ctx, preset, geo)
    model = build_seg_model(backbone, preset, geo.crop, geo.channels)
    heads = torch.nn.ModuleList([model.neck, model.decode] + ([model.aux] if model.aux is not None else []))
    groups = layer_decay_groups(backbone.model, heads, preset.weight_decay, preset.layer_decay,
                                train_backbone=not preset.freeze_backbone)
    amp = ctx.precision("train", "float16" if preset.fp16 else None)   # the configs' fp16 on GPUs
    cfg = TrainConfig(geo.iterations, geo.batch_size, preset.lr, min(preset.warmup_iters, geo.iterations // 10)
                      if ctx.quick else preset.warmup_iters, preset.warmup_ratio, preset.poly_power,
                      preset.min_lr_ratio, preset.betas, preset.aux_weight,
                      min(preset.checkpoint_every, max(geo.iterations // 2, 1)) if ctx.quick
                      else preset.checkpoint_every, amp)
    run_dir = _run_dir(ctx, preset, geo)
    info = train_segmentation(model, groups, train_set, cfg, device=ctx.device, run_dir=run_dir,
                              workers=ctx.workers, seed=ctx.seed)
    per_image = [] if dist_info()[1] == 1 else None
    conf = evaluate_segmentation(model, val_set, num_classes=preset.num_classes, crop=geo.crop,
                                 stride=geo.stride, device=ctx.device, amp=amp, per_image=per_image)
    scores = segmentation_scores(conf)
    metrics = {k: scores[k] for k in ("mIoU", "mAcc", "aAcc")}
    iou = scores["per_class_iou"]
    details = {"geometry": asdict(geo), "warmup_iters": cfg.warmup_iters, "amp": amp.name,
               "backbone_input": "vit-pyramid" if model.features.vit else "cnn-stages",
               "classes_evaluated": int((iou == iou).sum()),
               "pixels_label_out_of_range": scores["pixels_label_out_of_range"],
               "per_class_iou": [None if v != v else round(float(v), 4) for v in iou],
               "selection": "none: the model after the last iteration is evaluated once on the val split",
               "run_dir": str(run_dir) if run_dir else None, **info}
    samples = {}
    if per_image:   # mIoU = mean_c ΣI/ΣU, mAcc = mean_c ΣI/ΣGT over the (resampled) images
        inter, union, gt = (np.stack(a) for a in zip(*per_image))
        samples = {"mIoU": miou_samples(inter, union), "mAcc": miou_samples(inter, gt)}
    return ProtocolResult(metrics, details=details, headline=("mIoU", "mAcc", "aAcc"), samples=samples)


def _run_mmseg(ctx, preset: SegPreset) -> ProtocolResult:
    """--backend mmseg: reserved for mmsegmentation. Untested here (mmseg needs a compiled mmcv)."""
    try:
        import mmseg  # noqa: F401
    except ImportError as e:
        raise BenchError("--backend mmseg needs mmsegmentation (pip install -U openmim && mim install mmcv "
                         "mmsegmentation); or use --backend native (the default)") from e
    raise BenchError("--backend mmseg: mmsegmentation is installed, but bench does not yet translate presets into "
                     "mmseg configs; use --backend native (the default)")
