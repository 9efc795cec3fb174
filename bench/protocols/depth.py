"""Monocular depth on frozen features: NYU Depth v2 (Eigen split, Eigen crop, 0.001-10 m) and KITTI (Eigen split,
Garg crop, ≤ 80 m), with DINOv2's linear heads (lin1: the last block, lin4: four blocks) and a DPT head.

Paper: Oquab et al. 2023, DINOv2 (§7.4 "Depth estimation"); code: facebookresearch/dinov2 dinov2/eval/depth and
dinov2/hub/depthers.py (heads: bench/protocols/_depth_heads.py). Metrics: the Monocular-Depth-Estimation-Toolbox's
per-image AbsRel, SqRel, RMSE, RMSE log, δ<1.25^k, SILog, averaged over images (bench/metrics/depth.py).

Features come from bench/protocols/_depth_features.py: the backbone runs once per image and split, the maps are
cached per layer, and the head trains on the cached maps (so there is no per-iteration image augmentation: the
toolbox's random crop / rotation / flip / colour jitter are not applied; recorded in the preset's notes). The
head is trained with AdamW and SigLoss for `iterations` steps with a poly decay; the model after the last step
is evaluated once on the test split: nothing is selected on it. Any backbone: ViT blocks (`layer_indices`) with their
CLS tokens, or a CNN's / pyramid ViT's stages (`cnn_layer_indices`).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.features import is_vit
from ..errors import BenchError, NonFiniteError
from ..metrics.depth import CROPS, DEPTH_METRICS, aggregate_depth, depth_image_metrics, eval_mask
from ..presets import check_choices
from . import ProtocolResult, register_protocol
from ._depth_features import DenseSpec, extract_dense

__all__ = ["DepthPreset", "run_depth", "DATASET_DEFAULTS"]

_logger = logging.getLogger(__name__)

# (min_depth, max_depth, crop): toolbox nyu.py:71-72 + eigen_crop; kitti.py garg_crop, max 80 (depthers.py:22-33)
DATASET_DEFAULTS = {"nyu": (1e-3, 10.0, "eigen_nyu"), "kitti": (1e-3, 80.0, "garg")}


@dataclass(frozen=True)
class DepthPreset:
    head: str = "linear"                     # linear (DINOv2 lin1 / lin4) | dpt
    layer_indices: tuple[int, ...] = (-1,)          # ViT blocks (negative: from the end)
    cnn_layer_indices: tuple[int, ...] = (-1,)      # stages when the backbone is not a plain ViT
    norm: bool = False                       # DINOv2 hub: get_intermediate_layers(..., norm=False)
    cls_token: bool = True                   # concatenate each layer's CLS token (ViTs)
    upsample: int = 4
    n_bins: int = 256
    bins: str = "UD"
    bin_norm: str = "linear"
    dpt_channels: int = 256
    dpt_post_process_channels: tuple[int, ...] = (96, 192, 384, 768)
    min_depth: float | None = None           # None: the dataset's (NYU 1e-3..10, KITTI 1e-3..80)
    max_depth: float | None = None
    crop: str | None = None                  # None: the dataset's (NYU eigen_nyu, KITTI garg)
    loss_weight: float = 10.0
    iterations: int = 38_400
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-2
    poly_power: float = 1.0
    quick_iterations: int = 40               # --quick: iterations and batch (never comparable)
    quick_batch_size: int = 2
    extract_batch_size: int = 4
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, head=("linear", "dpt"), bins=("UD", "SID"), bin_norm=("linear", "softmax", "sigmoid"))
        if self.crop is not None and self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS} or null, got {self.crop!r}")
        if self.head == "dpt" and (len(self.layer_indices) != 4 or len(self.cnn_layer_indices) != 4):
            raise ValueError("the DPT head reads 4 layers: set layer_indices and cnn_layer_indices to 4 indices")


def _range(ctx, p: DepthPreset) -> tuple[float, float, str]:
    if ctx.dataset not in DATASET_DEFAULTS:
        raise BenchError(f"depth runs on {', '.join(DATASET_DEFAULTS)}, not {ctx.dataset!r} (--dataset nyu|kitti)")
    lo, hi, crop = DATASET_DEFAULTS[ctx.dataset]
    return (p.min_depth if p.min_depth is not None else lo, p.max_depth if p.max_depth is not None else hi,
            p.crop or crop)


def _spec(backbone, p: DepthPreset) -> DenseSpec:
    vit = is_vit(backbone.model)
    return DenseSpec(layers=tuple(p.layer_indices if vit else p.cnn_layer_indices), norm=p.norm,
                     cls=vit and p.cls_token, pad="center")


def _features(ctx, split: str, spec: DenseSpec, batch: int):
    from torchvision.transforms.functional import normalize, to_tensor
    backbone = ctx.require_backbone("depth (dense features)")
    pre = backbone.preprocessing

    def tf(img):
        return normalize(to_tensor(img), pre.mean, pre.std)

    images = ctx.open_images(split, tf)
    feats = extract_dense(backbone, images, spec, cache_dir=ctx.cache_dir, device=ctx.device, batch_size=batch,
                          key={"dataset": ctx.dataset, "split": split, "root": str(ctx.data_root.path),
                               "mean": list(pre.mean), "std": list(pre.std)}, desc=f"features {ctx.dataset}/{split}")
    ctx.inputs[f"{ctx.dataset}/{split}"] = {"source": "extracted", "count": len(images), "dense": asdict(spec),
                                            "shapes": feats.meta["shapes"], "cache_hit": feats.meta["cache_hit"]}
    return images, feats


def _build_head(p: DepthPreset, feats, lo: float, hi: float):
    from ._depth_heads import DPTHead, LinearBinsHead
    chans = [s[0] * (2 if c is not None else 1) for s, c in zip(feats.meta["shapes"], feats.cls)]
    if p.head == "dpt":
        same_grid = len({tuple(s[1:]) for s in feats.meta["shapes"]}) == 1
        return DPTHead([s[0] for s in feats.meta["shapes"]], p.dpt_channels, p.dpt_post_process_channels, lo, hi,
                       resample=same_grid)
    return LinearBinsHead(sum(chans), p.n_bins, lo, hi, p.upsample, p.bins, p.bin_norm)


def _predict(head, feats, rows, lo: float, hi: float, device) -> torch.Tensor:
    from ._depth_heads import head_input
    out = head(head_input(feats.layer_tensors(rows, device)))
    return out.clamp(lo, hi)          # encoder_decoder.py:75, before the resize to the ground truth


def _train(ctx, p: DepthPreset, head, images, feats, lo: float, hi: float, iterations: int,
           batch: int) -> list[float]:
    from tqdm.auto import tqdm
    from ._depth_heads import sigloss
    head.to(ctx.device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / iterations) ** p.poly_power)
    gen = np.random.default_rng(ctx.seed)
    n, losses = len(images), []
    import os
    for step in tqdm(range(iterations), desc="depth head", leave=False,
                     disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
        rows = np.sort(gen.choice(n, size=min(batch, n), replace=False))
        gt = torch.from_numpy(np.stack([images.depth(int(i)) for i in rows])).unsqueeze(1).to(ctx.device)
        pred = _predict(head, feats, rows, lo, hi, ctx.device)
        pred = F.interpolate(pred, size=gt.shape[2:], mode="bilinear", align_corners=False)  # decode_head.py:190
        loss = sigloss(pred, gt, p.loss_weight)
        if not torch.isfinite(loss):
            raise NonFiniteError(f"depth head loss is {loss.item()} at step {step}; lower --set lr=...")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def _evaluate(ctx, head, images, feats, lo: float, hi: float, crop: str, batch: int):
    head.eval()
    per_image = []
    for start in range(0, len(images), batch):
        rows = np.arange(start, min(start + batch, len(images)))
        pred = _predict(head, feats, rows, lo, hi, ctx.device)
        for j, i in enumerate(rows):
            gt = images.depth(int(i))
            pi = F.interpolate(pred[j:j + 1], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
            pi = pi.cpu().numpy().astype(np.float32)
            m = eval_mask(gt, lo, hi, crop)
            per_image.append(depth_image_metrics(gt[m], pi[m]))
    return per_image


@register_protocol("depth", preset_cls=DepthPreset, default_dataset="nyu", accepts_features=False)
def run_depth(ctx, preset: DepthPreset) -> ProtocolResult:
    """Monocular depth (NYU v2 / KITTI) with DINOv2's linear (lin1/lin4) or DPT head on frozen features."""
    lo, hi, crop = _range(ctx, preset)
    spec = _spec(ctx.require_backbone("depth"), preset)
    train_images, train_feats = _features(ctx, "train", spec, preset.extract_batch_size)
    test_images, test_feats = _features(ctx, "test", spec, preset.extract_batch_size)
    torch.manual_seed(ctx.seed)
    head = _build_head(preset, train_feats, lo, hi)
    iterations = min(preset.iterations, preset.quick_iterations) if ctx.quick else preset.iterations
    batch = min(preset.batch_size, preset.quick_batch_size) if ctx.quick else preset.batch_size
    losses = _train(ctx, preset, head, train_images, train_feats, lo, hi, iterations, batch)
    per_image = _evaluate(ctx, head, test_images, test_feats, lo, hi, crop, preset.extract_batch_size)
    metrics = aggregate_depth(per_image)
    empty = int(sum(np.isnan(m["rmse"]) for m in per_image))
    if empty == len(per_image):
        raise BenchError(f"{ctx.dataset}/test: no image has a valid depth pixel inside the {crop} crop")
    details: dict[str, Any] = {
        "depth_range": [lo, hi], "crop": crop, "iterations": iterations, "batch_size": batch, "dense": asdict(spec),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)] if losses else None,
        "images_without_valid_pixels": empty, "n_test": len(per_image),
        "per_image_rmse": [None if np.isnan(m["rmse"]) else round(m["rmse"], 5) for m in per_image],
        "selection": "none: the head after the last iteration is evaluated once on the test split"}
    headline = ("rmse", "abs_rel", "d1") + (("silog",) if ctx.dataset == "kitti" else ())
    return ProtocolResult({k: metrics[k] for k in DEPTH_METRICS}, details=details, headline=headline)
