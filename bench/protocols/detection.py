"""PASCAL VOC detection: fine-tune Faster R-CNN from the backbone's weights, report VOC07 AP (MoCo protocol).

Reference: facebookresearch/moco:detection/configs/{Base-RCNN-C4-BN,pascal_voc_R_50_C4_24k_moco}.yaml and
detection/train_net.py (detectron2), spec in research/protocols.md §4. Train on VOC2007 trainval + VOC2012 trainval,
test on VOC2007 test; AP50, AP (mean over IoU .50:.05:.95) and AP75 by the VOC2007 11-point rule, as detectron2's
PascalVOCDetectionEvaluator, plus the VOC2010+ area-under-curve variants (`*_area`). The test split selects
nothing: the schedule is fixed and the last iterate is evaluated once. MoCo reports the mean of 5 trials
(`--trials 5`); the record holds the mean in `metrics`, each trial and the std in `details` and `*_std`.

The default backend is torchvision's detection package (bench/protocols/_detection_model.py); `--backend
detectron2` is only a dispatch point (see `_detectron2`). detectron2's behaviour that MoCo's config relies on is
restated on torchvision's pieces: L1 box losses (`*_smooth_l1_beta: 0`), ROIAlignV2 (`roi_aligned`) and PRECISE_BN
(`precise_bn_iters`: BN statistics re-estimated on that many training batches before testing).
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

from .._argtypes import POSITIVE_INT
from .._io import sha256_json
from ..data.voc import VOC_CLASSES
from ..distributed import dist_info
from ..errors import BenchError
from ..presets import check_choices
from . import ProtocolResult, register_protocol
from ._detection_engine import DetectionSamples, train_detector, update_bn_stats
from ..metrics.detection import RECALL_GRIDS
from ..uncertainty import combine_seed_samples
from ._detection_evaluate import evaluate_voc
from ._detection_model import build_detector, set_test_size

__all__ = ["DetectionPreset", "QUICK_SETTINGS", "run_detection"]

_logger = logging.getLogger(__name__)
METRIC_NAMES = ("AP50", "AP", "AP75", "AP50_area", "AP_area", "AP75_area")

# --quick: a CPU smoke run on the 128-px miniature, seconds not hours. Sizes fit the miniature's images; fewer RPN
# proposals and RoIs keep the res5 head cheap. Never comparable (the runner marks the record).
# The C4 head runs res5 once per RoI, so --quick also pools RoIs at 7 × 7 instead of 14 × 14.
QUICK_SETTINGS: dict[str, Any] = {
    "iterations": 10, "batch_size": 2, "lr": 0.01, "steps": (8,), "warmup_iters": 2, "checkpoint_every": 5,
    "train_min_sizes": (96, 112, 128), "test_size": 128, "max_size": 224, "rois_per_image": 32,
    "pooler_resolution": 7, "rpn_pre_nms_train": 300, "rpn_post_nms_train": 100, "rpn_pre_nms_test": 150,
    "rpn_post_nms_test": 50}


@dataclass(frozen=True)
class DetectionPreset:
    head: str = "c4"                                     # c4 | fpn | vit (model.py)
    train_splits: tuple[str, ...] = ("2007-trainval", "2012-trainval")
    eval_split: str = "2007-test"
    num_classes: int = 20
    norm: str = "syncbn"                                 # syncbn (BN; SyncBN under DDP) | frozen
    freeze_at: int = 0
    res5_extra_norm: bool = True                         # MoCo's Res5ROIHeadsExtraNorm
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    pooler_resolution: int = 14                          # c4 only (fpn/vit: torchvision's 7 × 7)
    roi_aligned: bool = False                            # c4: ROIAlignV2 (aligned=True); False: torchvision's
    rpn_smooth_l1_beta: float = 1 / 9                    # RPN box loss; torchvision 1/9, detectron2 0 (= L1)
    box_smooth_l1_beta: float = 1 / 9                    # box head loss; same
    precise_bn_iters: int = 0                            # detectron2 PRECISE_BN NUM_ITER; 0 = off
    fpn_channels: int = 256                              # fpn / vit pyramid width
    train_min_sizes: tuple[int, ...] = tuple(range(480, 801, 32))
    test_size: int = 800
    max_size: int = 1333
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 1000
    rois_per_image: int = 512
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    iterations: int = 24000
    batch_size: int = 16                                 # images per iteration over all ranks
    lr: float = 0.02
    steps: tuple[int, ...] = (18000, 22000)
    warmup_iters: int = 100
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    amp: bool = True                                     # fp16 autocast + GradScaler on GPU (--amp: any device)
    checkpoint_every: int = 2000
    quick_iterations: int = 10                           # --quick: iterations (lr steps at 80%); never comparable
    eval_batch_size: int = 4
    recall_grid: str = "devkit"                          # 11-point recall floats: devkit (0:0.1:1) | numpy (detectron2)
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        check_choices(self, head=("c4", "fpn", "vit"), norm=("syncbn", "frozen"), recall_grid=tuple(RECALL_GRIDS))
        if min(self.iterations, self.batch_size, self.checkpoint_every, self.quick_iterations) < 1:
            raise ValueError("iterations, batch_size, checkpoint_every and quick_iterations must be ≥ 1")


def _add_arguments(p) -> None:
    p.add_argument("--trials", type=POSITIVE_INT, default=1, help="independent fine-tunings (seeds seed…seed+N-1); "
                                                                  "MoCo reports the mean of 5 (the same as bench run --seeds)")
    p.add_argument("--backend", choices=("torchvision", "detectron2"), default="torchvision")


def _options(args) -> dict[str, Any]:
    if args.trials < 1:
        raise BenchError(f"--trials {args.trials}: give at least 1")
    return {"trials": args.trials, "backend": args.backend}


def _detectron2(ctx, preset: DetectionPreset) -> ProtocolResult:
    """`--backend detectron2`: MoCo ran detectron2's train_net.py; bench does not drive detectron2 (untested here)."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        raise BenchError("detectron2 is not installed; pip install 'git+https://github.com/facebookresearch/"
                         "detectron2.git' or use --backend torchvision") from None
    raise BenchError("detectron2 is installed, but bench's detectron2 backend is not implemented; run "
                     "facebookresearch/moco:detection/train_net.py with pascal_voc_R_50_C4_24k_moco.yaml, "
                     "or use --backend torchvision")


def _init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); the device for this rank."""
    import torch.distributed as dist
    from ..distributed import backend_for
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(device.type))
    if dist.is_initialized() and device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device


def _run_dir(ctx, preset: DetectionPreset, seed: int) -> Path | None:
    """Checkpoints live under the cache, keyed by everything that determines the trained weights."""
    if ctx.cache_dir is None:
        _logger.warning("no cache dir (--no-cache): detection training will not checkpoint or resume")
        return None
    trained_by = {k: v for k, v in dataclasses.asdict(preset).items() if k != "recall_grid"}   # evaluation only
    key = sha256_json({"weights": ctx.require_backbone("detection").weights_id, "preset": trained_by,
                       "root": str(ctx.data_root.path), "seed": seed, "world": dist_info()[1],
                       **({"amp": ctx.amp} if ctx.amp != "auto" else {})})[:24]
    return Path(ctx.cache_dir) / "detection" / key


def _trial(ctx, preset: DetectionPreset, seed: int, device: torch.device, train_set, test_set) -> dict[str, Any]:
    backbone = ctx.require_backbone("detection fine-tuning")
    rank, world = dist_info()
    torch.manual_seed(seed)
    model = build_detector(copy.deepcopy(backbone.model), preset, mean=backbone.preprocessing.mean,
                           std=backbone.preprocessing.std,
                           distributed=world > 1 and device.type == "cuda").to(device)   # SyncBN is CUDA-only
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                            else None)
    prec = ctx.precision("train", "float16" if preset.amp else None)   # the preset's amp: fp16 on GPUs
    train = train_detector(wrapped, train_set, preset, device=device, seed=seed, run_dir=_run_dir(ctx, preset, seed),
                           workers=ctx.workers, desc=f"detection seed {seed}", precision=prec)
    if preset.precise_bn_iters > 0:
        train["precise_bn"] = update_bn_stats(wrapped, train_set, preset, device=device, seed=seed,
                                              workers=ctx.workers, precision=prec)
    set_test_size(model, preset.test_size, preset.max_size)
    metrics, details = evaluate_voc(model, test_set, VOC_CLASSES, device=device, batch_size=preset.eval_batch_size,
                                    workers=ctx.workers, amp=prec, recall_grid=preset.recall_grid)
    return {"seed": seed, "metrics": metrics, "train": train, **details}   # details["_samples"]: popped by the caller


@register_protocol("detection", preset_cls=DetectionPreset, default_dataset="voc", accepts_features=False,
                   add_arguments=_add_arguments, options=_options)
def run_detection(ctx, preset: DetectionPreset) -> ProtocolResult:
    """PASCAL VOC07+12 Faster R-CNN fine-tuning, VOC07 11-point AP50/AP/AP75 (MoCo detection protocol)."""
    options = {"trials": 1, "backend": "torchvision", **ctx.options}
    if options["backend"] == "detectron2":
        return _detectron2(ctx, preset)
    if ctx.quick:
        n = preset.quick_iterations
        preset = dataclasses.replace(preset, **{**QUICK_SETTINGS, "iterations": n, "steps": (max(1, n * 4 // 5),),
                                                "precise_bn_iters": min(preset.precise_bn_iters, 2),
                                                "checkpoint_every": max(1, n // 2)})
    device = _init_distributed(ctx.device)
    train_set = DetectionSamples([ctx.open_images(s, None) for s in preset.train_splits])
    test_set = ctx.open_images(preset.eval_split, None)
    for split, ds in zip(preset.train_splits + (preset.eval_split,), train_set.datasets + [test_set]):
        ctx.inputs[f"{ctx.dataset}/{split}"] = {"source": "images", "count": len(ds)}
    trials = [_trial(ctx, preset, ctx.seed + i, device, train_set, test_set) for i in range(options["trials"])]
    per_trial_samples = [t.pop("_samples") for t in trials]
    samples = per_trial_samples[0] if len(trials) == 1 else combine_seed_samples(per_trial_samples)
    table = {k: np.array([t["metrics"][k] for t in trials]) for k in METRIC_NAMES}
    metrics = {k: float(v.mean()) for k, v in table.items()}
    if len(trials) > 1:
        metrics.update({f"{k}_std": float(v.std(ddof=1)) for k, v in table.items()})
    details = {"backend": "torchvision", "trials": trials, "std": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0
                                                                   for k, v in table.items()},
               "quick_settings": QUICK_SETTINGS if ctx.quick else None, "world_size": dist_info()[1],
               "selection": "none: fixed schedule, last iterate evaluated once on the test split"}
    from ..seeds import seeds_block
    block = seeds_block([{"seed": t["seed"], "metrics": t["metrics"]} for t in trials]) if len(trials) > 1 else None
    return ProtocolResult(metrics, details, headline=("AP50", "AP", "AP75"), seeds=block, samples=samples)
