"""COCO instance detection: fine-tune Mask R-CNN (FPN) from the backbone's weights, report box and mask AP.

Reference: mmdet 2.x `configs/_base_/models/mask_rcnn_r50_fpn.py`, `_base_/datasets/coco_instance.py` and
`_base_/schedules/schedule_1x.py`, the files UM-MAE's DET/ tree ships (implus/UM-MAE:DET/configs/_base_/…).
Train on `instances_train2017.json` (images without a usable box left out, as mmdet/detectron2/torchvision),
evaluate the last iterate once on `instances_val2017.json` with pycocotools' COCOeval: box AP, AP50, AP75,
APs/m/l and the same six for masks (`mask_…`), in percent (bench/metrics/coco.py). Nothing is selected on val.

Training reuses the detection protocol's resumable iteration loop (bench/protocols/_detection_engine.py: SGD,
linear warmup, step decay, checkpoints every `checkpoint_every` iterations); each image is flipped with
probability 0.5 (boxes and masks with it) and resized by torchvision's GeneralizedRCNNTransform (short side from
`train_min_sizes`, long side ≤ `max_size`). The backbone: a ResNet through layer1…layer4, or a pyramid ViT
(timm PVT v2 / Swin) through its four stage outputs (bench/protocols/_coco_detection_model.py).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import sha256_json
from ..distributed import dist_info
from ..errors import BenchError
from ..precision import Precision
from ..presets import check_choices
from . import ProtocolResult, register_protocol

__all__ = ["CocoDetPreset", "QUICK_SETTINGS", "run_coco_detection", "predict_coco", "evaluate_coco"]

_logger = logging.getLogger(__name__)

# --quick: a CPU smoke run on the 128-px miniature (never comparable; the runner marks the record). The FPN and
# the mask head's four convolutions are 64 wide instead of 256: at 256 they are most of a CPU iteration. lr: the
# preset's 0.02 for 16 images scaled linearly to 2; 0.005 and above diverged (NaN) within 50 iterations.
QUICK_SETTINGS: dict[str, Any] = {
    "batch_size": 2, "lr": 0.0025, "warmup_iters": 5, "train_min_sizes": (96, 112, 128), "test_size": 128,
    "max_size": 224, "rois_per_image": 32, "rpn_pre_nms_train": 300, "rpn_post_nms_train": 100,
    "rpn_pre_nms_test": 150, "rpn_post_nms_test": 50, "fpn_channels": 64, "mask_head_channels": 64}


@dataclass(frozen=True)
class CocoDetPreset:
    train_split: str = "train2017"
    eval_split: str = "val2017"
    num_classes: int = 80
    norm: str = "frozen"                                 # frozen (FrozenBN) | syncbn (BN trained; SyncBN on DDP)
    freeze_at: int = 2                                   # mmdet frozen_stages=1: stem + layer1 (ResNets only)
    fpn_channels: int = 256
    mask_head_channels: int = 256                        # the mask head's four 3×3 convs (torchvision, mmdet: 256)
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)   # torchvision's FPN anchors (documentation)
    train_min_sizes: tuple[int, ...] = (800,)
    test_size: int = 800
    max_size: int = 1333
    rpn_pre_nms_train: int = 2000                        # per level
    rpn_post_nms_train: int = 1000
    rpn_pre_nms_test: int = 1000
    rpn_post_nms_test: int = 1000
    rois_per_image: int = 512
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    iterations: int = 87960
    batch_size: int = 16                                 # images per iteration over all ranks
    lr: float = 0.02
    steps: tuple[int, ...] = (58640, 80630)
    warmup_iters: int = 500
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 1e-4                      # mmdet has no norm exception
    amp: bool = True                                     # fp16 autocast + GradScaler on GPU (--amp: any device)
    checkpoint_every: int = 2000
    quick_iterations: int = 12                           # --quick: iterations (lr steps at 80%)
    eval_batch_size: int = 2
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, norm=("syncbn", "frozen"))
        if min(self.iterations, self.batch_size, self.checkpoint_every, self.quick_iterations) < 1:
            raise ValueError("iterations, batch_size, checkpoint_every and quick_iterations must be ≥ 1")
        if not 0 < self.mask_threshold < 1:
            raise ValueError(f"mask_threshold must be in (0, 1), got {self.mask_threshold}")


class CocoSamples(torch.utils.data.Dataset):
    """(index, flip) → (float CHW image in [0, 1], {"boxes", "labels", "masks", "image_id"}), for TrainStream."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, bool]):
        from torchvision.transforms.functional import pil_to_tensor
        i, flip = key
        img, t = self.dataset[self.indices[i]]
        x = pil_to_tensor(img).float().div_(255)
        boxes, masks = torch.as_tensor(t["boxes"]), torch.as_tensor(t["masks"])
        if flip:
            w = x.shape[-1]
            x, masks = x.flip(-1), masks.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return x, {"boxes": boxes, "labels": torch.as_tensor(t["labels"]), "masks": masks,
                   "image_id": t["image_id"]}


@torch.inference_mode()
def predict_coco(model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int = 2,
                 workers: int = 0, amp: Precision | None = None, mask_threshold: float = 0.5
                 ) -> list[dict[str, Any]]:
    """COCO result dicts (bbox and segmentation) for every image, gathered across ranks in dataset order."""
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm
    from ..metrics.coco import coco_results
    from ._detection_engine import collate_lists
    rank, world = dist_info()
    shard = Subset(CocoSamples(dataset, list(range(len(dataset)))), [(i, False) for i in range(rank, len(dataset),
                                                                                                world)])
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate_lists)
    core = model.module if hasattr(model, "module") else model
    core.eval()
    out: list[tuple[int, list[dict]]] = []
    order = iter(range(rank, len(dataset), world))
    for images, targets in tqdm(loader, desc="coco detect", unit="batch", leave=False,
                                disable=rank != 0 or os.environ.get("BENCH_PROGRESS", "1") == "0"):
        with (amp or Precision(device.type)).autocast():
            preds = core([x.to(device) for x in images])
        for t, p in zip(targets, preds):
            masks = p["masks"][:, 0].float().cpu().numpy() if "masks" in p else None
            out.append((next(order), coco_results(t["image_id"], p["boxes"].float().cpu().numpy(),
                                                  p["scores"].float().cpu().numpy(), p["labels"].cpu().numpy(),
                                                  dataset.category_ids, masks, mask_threshold)))
    if world > 1:
        parts: list = [None] * world
        dist.all_gather_object(parts, out)
        out = [d for part in parts for d in part]
    return [r for _, results in sorted(out, key=lambda d: d[0]) for r in results]


def evaluate_coco(model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int = 2, workers: int = 0,
                  amp: Precision | None = None, mask_threshold: float = 0.5) -> tuple[dict[str, float], dict[str, Any]]:
    """Box metrics as `AP…`, mask metrics as `mask_AP…` (percent), over every image of `dataset`."""
    from ..metrics.coco import coco_ap
    results = predict_coco(model, dataset, device=device, batch_size=batch_size, workers=workers, amp=amp,
                           mask_threshold=mask_threshold)
    box, box_details = coco_ap(dataset.coco, results, "bbox", img_ids=dataset.ids)
    mask, mask_details = coco_ap(dataset.coco, results, "segm", img_ids=dataset.ids)
    metrics = {**box, **{f"mask_{k}": v for k, v in mask.items()}}
    return metrics, {"bbox": box_details, "segm": mask_details, "n_test_images": len(dataset),
                     "n_detections": len(results)}


def _run_dir(ctx, preset: CocoDetPreset, seed: int) -> Path | None:
    if ctx.cache_dir is None:
        _logger.warning("no cache dir (--no-cache): coco_detection training will not checkpoint or resume")
        return None
    key = sha256_json({"weights": ctx.require_backbone("coco_detection").weights_id,
                       "preset": dataclasses.asdict(preset), "root": str(ctx.data_root.path), "seed": seed,
                       "world": dist_info()[1], **({"amp": ctx.amp} if ctx.amp != "auto" else {})})[:24]
    return Path(ctx.cache_dir) / "coco_detection" / key


def _quick(preset: CocoDetPreset) -> CocoDetPreset:
    n = preset.quick_iterations
    return dataclasses.replace(preset, **{**QUICK_SETTINGS, "iterations": n, "steps": (max(1, n * 4 // 5),),
                                          "checkpoint_every": max(1, n // 2)})


@register_protocol("coco_detection", preset_cls=CocoDetPreset, default_dataset="coco", accepts_features=False)
def run_coco_detection(ctx, preset: CocoDetPreset) -> ProtocolResult:
    """COCO train2017 Mask R-CNN (FPN) fine-tuning; box and mask AP on val2017 with pycocotools."""
    from .detection import _init_distributed
    from ._detection_engine import train_detector
    from ._coco_detection_model import build_mask_rcnn, is_resnet
    backbone = ctx.require_backbone("coco_detection fine-tuning")
    if ctx.quick:
        preset = _quick(preset)
    device = _init_distributed(ctx.device)
    train_set = ctx.open_images(preset.train_split, None)
    test_set = ctx.open_images(preset.eval_split, None)
    if not hasattr(train_set, "category_ids"):
        raise BenchError(f"coco_detection needs a COCO-layout dataset (instances_*.json), not {ctx.dataset!r}; "
                         f"use --dataset coco")
    if train_set.category_ids != test_set.category_ids:
        raise BenchError(f"{train_set.ann_file} and {test_set.ann_file} list different categories; use the "
                         f"official instances_{{train,val}}2017.json pair")
    if len(train_set.category_ids) > preset.num_classes:
        raise BenchError(f"{train_set.ann_file} has {len(train_set.category_ids)} categories but the preset's head "
                         f"{preset.num_classes}; --set num_classes={len(train_set.category_ids)}")
    keep = train_set.with_objects()
    samples = CocoSamples(train_set, keep)
    ctx.inputs[f"{ctx.dataset}/{preset.train_split}"] = {"source": "images", "count": len(train_set),
                                                         "trained_on": len(keep)}
    ctx.inputs[f"{ctx.dataset}/{preset.eval_split}"] = {"source": "images", "count": len(test_set)}
    rank, world = dist_info()
    torch.manual_seed(ctx.seed)
    model = build_mask_rcnn(copy.deepcopy(backbone.model), preset, mean=backbone.preprocessing.mean,
                            std=backbone.preprocessing.std, num_classes=preset.num_classes,
                            distributed=world > 1 and device.type == "cuda").to(device)
    wrapped = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)
    prec = ctx.precision("train", "float16" if preset.amp else None)   # mmdet's fp16 on GPUs
    train = train_detector(wrapped, samples, preset, device=device, seed=ctx.seed,
                           run_dir=_run_dir(ctx, preset, ctx.seed), workers=ctx.workers, desc="coco_detection",
                           precision=prec)
    model.transform.min_size, model.transform.max_size = (preset.test_size,), preset.max_size
    metrics, details = evaluate_coco(model, test_set, device=device, batch_size=preset.eval_batch_size,
                                     workers=ctx.workers, amp=prec, mask_threshold=preset.mask_threshold)
    details.update({"train": train, "backbone_input": "layer1-4 + FPN" if is_resnet(backbone.model)
                    else "forward_intermediates (4 stages) + FPN",
                    "quick_settings": QUICK_SETTINGS if ctx.quick else None, "world_size": world,
                    "categories": list(train_set.class_names),
                    "selection": "none: fixed schedule, last iterate evaluated once on the val split"})
    return ProtocolResult(metrics, details, headline=("AP", "AP50", "AP75", "mask_AP"))
