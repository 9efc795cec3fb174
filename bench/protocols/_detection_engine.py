"""Iteration-based detector training as detectron2's `SimpleTrainer` + `WarmupMultiStepLR`, resumable.

Data order: every "epoch" is a permutation of the training images drawn from (seed, epoch) and sharded by rank,
with a horizontal flip per image drawn from the same generator (detectron2's RandomFlip, p = 0.5); iteration i
reads batch i of that stream, so a resumed run sees exactly the images it would have seen. The short-side size is
drawn by torchvision's GeneralizedRCNNTransform from the preset's sizes (detectron2's ResizeShortestEdge "choice")
with torch's global generator, whose state is checkpointed.

Solver (detectron2 defaults, MoCo's config): SGD momentum 0.9, weight decay 1e-4 but 0 on norm layers
(`WEIGHT_DECAY_NORM: 0.0`), linear warmup from 0.001× over `warmup_iters`, ×0.1 at each step. A non-finite loss
raises NonFiniteError. Checkpoints (model, optimizer, scheduler, AMP scaler, RNG, iteration) are written atomically
every `checkpoint_every` iterations and at the end, by rank 0, into the run directory.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .._io import atomic_write_bytes
from ..distributed import dist_info
from ..precision import Precision, resolve_precision
from ..train import RunDir, check_finite, scaled_step

__all__ = ["TrainStream", "DetectionSamples", "train_detector", "lr_factor", "collate_lists", "to_tensor_target",
           "update_bn_stats", "preset_precision"]

_logger = logging.getLogger(__name__)


def to_tensor_target(img, target: dict, flip: bool = False) -> tuple[torch.Tensor, dict]:
    """PIL image → float [0, 1] CHW (the model normalises); numpy target → tensors, boxes flipped with the image."""
    from torchvision.transforms.functional import pil_to_tensor
    x = pil_to_tensor(img.convert("RGB")).float().div_(255)
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    if flip:
        x = x.flip(-1)
        w = x.shape[-1]
        boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
    return x, {"boxes": boxes, "labels": torch.as_tensor(target["labels"], dtype=torch.int64),
               "image_id": target["image_id"]}


class DetectionSamples(Dataset):
    """Indexed by (dataset, index, flip) triples from TrainStream; a ConcatDataset-free union of several splits."""

    def __init__(self, datasets: list[Dataset]):
        self.datasets = datasets
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, bool]):
        i, flip = key
        d = int(np.searchsorted(self.offsets, i, side="right") - 1)
        img, target = self.datasets[d][i - int(self.offsets[d])]
        return to_tensor_target(img, target, flip)


class TrainStream(Sampler):
    """Batches of (index, flip) for iterations start…total-1 on this rank (see the module docstring)."""

    def __init__(self, n: int, batch_per_rank: int, total: int, start: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.total, self.start = n, batch_per_rank, total, start
        self.seed, self.rank, self.world = seed, rank, world
        self.per_epoch = max((n // world) // batch_per_rank, 1)

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order, flips = rng.permutation(self.n), rng.random(self.n) < 0.5
        if len(order) < self.world * self.batch:   # tiny data: repeat so every rank fills a batch
            reps = -(-self.world * self.batch // len(order))
            order, flips = np.tile(order, reps), np.tile(flips, reps)
        return order[self.rank::self.world], flips[self.rank::self.world]

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        epoch, cached = -1, None
        for it in range(self.start, self.total):
            if it // self.per_epoch != epoch:
                epoch = it // self.per_epoch
                cached = self._epoch(epoch)
            j = (it % self.per_epoch) * self.batch
            yield [(int(i), bool(f)) for i, f in zip(cached[0][j:j + self.batch], cached[1][j:j + self.batch])]


def collate_lists(batch: list) -> tuple:
    """[(image, target), ...] → (images, targets): detection images keep their own sizes."""
    return tuple(zip(*batch))


def lr_factor(it: int, warmup_iters: int, steps: tuple[int, ...], gamma: float = 0.1,
              warmup_factor: float = 0.001) -> float:
    """detectron2 WarmupMultiStepLR with linear warmup: factor at iteration `it` (0-based)."""
    warm = 1.0
    if it < warmup_iters:
        alpha = it / warmup_iters
        warm = warmup_factor * (1 - alpha) + alpha
    return warm * gamma ** sum(1 for s in steps if s <= it)


def _param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    norm, other, seen = [], [], set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_norm = isinstance(module, norm_types) or type(module).__name__.startswith("LayerNorm")
            (norm if is_norm else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": weight_decay_norm}]


def _save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _state(model, opt, sched, scaler, it: int) -> dict:
    core = model.module if hasattr(model, "module") else model
    return {"iteration": it, "model": core.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _resume(run_dir: Path | None, model, opt, sched, scaler) -> int:
    """The iteration to start from: 0, or that of the last checkpoint in `run_dir` (state restored)."""
    if run_dir is None:
        return 0
    core = model.module if hasattr(model, "module") else model

    def apply(ck):
        core.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        it = int(ck["iteration"])
        torch.set_rng_state(ck["torch_rng"])
        if ck["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        _logger.info("resuming detection training from %s at iteration %d", run_dir / "last.pt", it)
        return it
    return RunDir(run_dir).restore(apply, protect=(core, opt, sched, scaler)) or 0


def preset_precision(preset: Any, device: torch.device, amp: str = "auto") -> Precision:
    """The preset's `amp` is detectron2's / mmdet's fp16 AMP on GPUs (bench.precision for --amp)."""
    return resolve_precision(amp, device, "float16" if preset.amp else None)


def _step(model, images, targets, opt, sched, scaler, device, prec: Precision, it: int) -> float:
    images = [x.to(device, non_blocking=True) for x in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    with prec.autocast():
        losses = model(images, targets)
        loss = sum(losses.values())
    check_finite(loss, f"detection iteration {it} ({ {k: round(v.item(), 4) for k, v in losses.items()} })",
                 fix="lower the lr or check the data")
    scaled_step(loss, opt, scaler)
    sched.step()
    return loss.item()


def train_detector(model: nn.Module, samples: DetectionSamples, preset: Any, *, device: torch.device, seed: int,
                   run_dir: Path | None, workers: int = 0, desc: str = "detection",
                   precision: Precision | None = None) -> dict[str, Any]:
    """Train `model` (already on `device`, DDP-wrapped if distributed) for preset.iterations; resumes from run_dir.
    `precision`: the autocast dtype (default: the preset's fp16 `amp` on a GPU, float32 elsewhere)."""
    from tqdm.auto import tqdm
    rank, world = dist_info()
    prec = precision or preset_precision(preset, device)
    opt = torch.optim.SGD(_param_groups(model, preset.weight_decay, preset.weight_decay_norm), lr=preset.lr,
                          momentum=preset.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, preset.warmup_iters, preset.steps))
    scaler = prec.grad_scaler()
    start = _resume(run_dir, model, opt, sched, scaler)
    stream = TrainStream(len(samples), max(preset.batch_size // world, 1), preset.iterations, start, seed, rank, world)
    # its own generator: DataLoader draws a worker seed when iterated, which would shift the global RNG of a resume
    loader = DataLoader(samples, batch_sampler=stream, num_workers=workers, collate_fn=collate_lists,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    model.train()
    losses = []
    bar = tqdm(loader, total=len(stream), desc=desc, unit="it", leave=False,
               disable=rank != 0 or os.environ.get("BENCH_PROGRESS", "1") == "0")
    for it, (images, targets) in enumerate(bar, start=start):
        losses.append(_step(model, images, targets, opt, sched, scaler, device, prec, it))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{sched.get_last_lr()[0]:.2g}", refresh=False)
        done = it + 1
        if run_dir is not None and rank == 0 and (done % preset.checkpoint_every == 0 or done == preset.iterations):
            _save(run_dir / "last.pt", _state(model, opt, sched, scaler, done))
    return {"start_iteration": start, "iterations": preset.iterations, "amp": prec.name, "world_size": world,
            "final_loss": losses[-1] if losses else None,
            "mean_loss_last_10pct": float(np.mean(losses[-max(len(losses) // 10, 1):])) if losses else None}


@torch.no_grad()
def update_bn_stats(model: nn.Module, samples: DetectionSamples, preset: Any, *, device: torch.device, seed: int,
                    workers: int = 0, precision: Precision | None = None) -> dict[str, Any]:
    """detectron2 PRECISE_BN (fvcore `update_bn_stats`): each BatchNorm's running mean and variance become the
    plain average, over `preset.precise_bn_iters` training batches run in train mode, of its batch means and
    (unbiased) batch variances; nothing else changes. The batches continue the training stream (iterations
    `iterations`…), so they are the images training would have seen next, with the same augmentation."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return {"iterations": 0, "bn_layers": 0}
    rank, world = dist_info()
    n = preset.precise_bn_iters
    stream = TrainStream(len(samples), max(preset.batch_size // world, 1), preset.iterations + n, preset.iterations,
                         seed, rank, world)
    loader = DataLoader(samples, batch_sampler=stream, num_workers=workers, collate_fn=collate_lists,
                        generator=torch.Generator().manual_seed(seed))
    momenta = [bn.momentum for bn in bns]
    for bn in bns:   # momentum None: torch keeps the cumulative average of the batch statistics
        bn.reset_running_stats()
        bn.momentum = None
    was = model.training
    model.train()
    prec = precision or preset_precision(preset, device)
    for images, targets in loader:
        images = [x.to(device, non_blocking=True) for x in images]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        with prec.autocast():
            model(images, targets)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.train(was)
    return {"iterations": n, "bn_layers": len(bns)}
