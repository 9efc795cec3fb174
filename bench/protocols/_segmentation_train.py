"""Iteration-based training (mmseg IterBasedRunner) with DDP, AMP, atomic checkpoints and resume; evaluation.

DDP: launched with torchrun, each rank trains on its share of the batch (DistributedSampler); BatchNorm becomes
SyncBatchNorm on GPUs (the configs' SyncBN). Only rank 0 writes checkpoints. Evaluation shards the images over the ranks
and all-reduces one confusion matrix. AMP is fp16 autocast with a GradScaler (the configs' fp16) on CUDA, or
--amp's dtype on any device (bench.precision).
Checkpoints hold the trainable modules, the optimiser, the scaler, the iteration and the RNG states (Python,
numpy, torch, CUDA); a resumed run continues from the last one written, so an interrupted run repeats at most
`checkpoint_every` iterations and ends at the same number as an uninterrupted one: the data order resumes at
the same sample, and each sample's augmentation is seeded by (seed, rank, position in the sample stream), so it
does not depend on which process or DataLoader worker drew it.
"""
from __future__ import annotations

import io
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .._io import atomic_write_bytes
from ..errors import DataError
from ..distributed import dist_info
from ..precision import Precision, resolve_precision
from ..metrics.segmentation import IGNORE_INDEX, confusion_matrix
from ..train import RunDir, check_finite, rng_state, scaled_step, set_rng_state
from ._segmentation_model import SegModel, slide_inference
from ._segmentation_optim import poly_warmup_factor

__all__ = ["TrainConfig", "train_segmentation", "evaluate_segmentation"]

_logger = logging.getLogger(__name__)
CKPT_NAME = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    iterations: int
    batch_size: int              # total over all ranks
    lr: float
    warmup_iters: int
    warmup_ratio: float
    poly_power: float
    min_lr_ratio: float
    betas: tuple[float, float]
    aux_weight: float
    checkpoint_every: int
    amp: Precision | bool        # the autocast dtype; a bool: the configs' fp16 on CUDA, float32 elsewhere


def _progress(iterable, **kw):
    from tqdm.auto import tqdm
    return tqdm(iterable, leave=False, disable=os.environ.get("BENCH_PROGRESS", "1") == "0" or
                dist_info()[0] != 0, **kw)


def _trainable_state(model: SegModel) -> dict[str, torch.Tensor]:
    # A frozen backbone is rebuilt from its own weights on resume; only what training changes is saved.
    skip = "features." if model.features.frozen else None
    return {k: v for k, v in model.state_dict().items() if skip is None or not k.startswith(skip)}


def _save(run_dir: Path, model: SegModel, opt, scaler, it: int) -> None:
    buf = io.BytesIO()
    torch.save({"model": _trainable_state(model), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "iteration": it, "rng": rng_state()}, buf)
    atomic_write_bytes(run_dir / CKPT_NAME, buf.getvalue())


def _resume(run_dir: Path | None, model: SegModel, opt, scaler, device) -> int:
    if run_dir is None:
        return 0

    def apply(state):
        model.load_state_dict(state["model"], strict=not model.features.frozen)
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        it = int(state["iteration"])
        if "rng" in state:
            set_rng_state(state["rng"])
        _logger.info("resuming segmentation training from %s at iteration %d", run_dir / CKPT_NAME, it)
        return it
    return RunDir(run_dir, CKPT_NAME).restore(apply, protect=(model, opt, scaler)) or 0


class _Positioned(Dataset):
    """dataset[(i, pos)] = dataset[i] with Python's and torch's RNGs seeded from (seed, rank, pos): the random
    crop/flip/jitter of the pos-th sample of the stream is the same in a resumed run and in any worker."""

    def __init__(self, base: Dataset, seed: int, rank: int):
        self.base, self.seed, self.rank = base, seed, rank

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        i, pos = item
        key = (self.seed * 1_000_003 + self.rank) * (1 << 40) + pos
        saved = random.getstate(), torch.get_rng_state()   # leave the caller's streams (dropout) untouched
        random.seed(key)
        torch.manual_seed(key % (1 << 63))
        try:
            return self.base[i]
        finally:
            random.setstate(saved[0])
            torch.set_rng_state(saved[1])


class _StreamBatches:
    """Batches of (index, stream position) pairs: the DistributedSampler's order, epoch after epoch, starting at
    batch `start` (a resumed run picks up where the checkpoint left off instead of replaying epoch 0)."""

    def __init__(self, sampler, batch: int, start: int):
        self.sampler, self.batch, self.start = sampler, batch, start

    def __iter__(self):
        per_epoch = len(self.sampler) // self.batch
        if per_epoch == 0:
            raise DataError(f"segmentation training set: fewer images per process ({len(self.sampler)}) than the "
                            f"batch size {self.batch}; lower --set batch_size")
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(skip, per_epoch):
                base = (epoch * per_epoch + b) * self.batch
                yield [(order[b * self.batch + j], base + j) for j in range(self.batch)]
            epoch, skip = epoch + 1, 0


def _batches(dataset: Dataset, batch: int, workers: int, seed: int, rank: int, world: int, pin: bool,
             start: int = 0):
    """Endless shuffled batches (drop_last, as mmseg's infinite sampler), a new order every pass, from batch
    `start` on."""
    from torch.utils.data.distributed import DistributedSampler
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(_Positioned(dataset, seed, rank), batch_sampler=_StreamBatches(sampler, batch, start),
                        num_workers=workers, pin_memory=pin, persistent_workers=workers > 0,
                        generator=torch.Generator().manual_seed(seed))   # its seed draw must not shift dropout's
    yield from loader


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, aux_weight: float) -> torch.Tensor:
    logits, aux = model(x)
    loss = F.cross_entropy(F.interpolate(logits.float(), y.shape[1:], mode="bilinear", align_corners=False), y,
                           ignore_index=IGNORE_INDEX)
    if aux is not None:
        loss = loss + aux_weight * F.cross_entropy(
            F.interpolate(aux.float(), y.shape[1:], mode="bilinear", align_corners=False), y,
            ignore_index=IGNORE_INDEX)
    return loss


def train_segmentation(model: SegModel, groups: list[dict], train_set: Dataset, cfg: TrainConfig, *,
                       device: torch.device, run_dir: Path | None, workers: int = 0, seed: int = 0) -> dict:
    """Train for cfg.iterations (resuming from run_dir); returns {"resumed_from", "final_loss"}."""
    rank, world = dist_info()
    model.to(device)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    prec = cfg.amp if isinstance(cfg.amp, Precision) else resolve_precision("auto", device,
                                                                            "float16" if cfg.amp else None)
    scaler = prec.grad_scaler()
    start = _resume(run_dir, model, opt, scaler, device)
    net = model
    if world > 1:
        if device.type == "cuda":   # SyncBN (the configs' norm) exists only for GPU modules; CPU/gloo keeps BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()
    batches = _batches(train_set, max(cfg.batch_size // world, 1), workers, seed, rank, world,
                       device.type == "cuda", start)
    loss_value = float("nan")
    for it in _progress(range(start, cfg.iterations), desc="segmentation train", unit="it", initial=start,
                        total=cfg.iterations):
        factor = poly_warmup_factor(it, cfg.iterations, cfg.warmup_iters, cfg.warmup_ratio, cfg.poly_power,
                                    cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * factor * g.get("lr_scale", 1.0)
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with prec.autocast():
            loss = _loss(net, x, y, cfg.aux_weight)
        check_finite(loss, f"segmentation iteration {it}", fix="lower the lr (--set lr=...) or check the checkpoint")
        scaled_step(loss, opt, scaler)
        loss_value = float(loss.detach())
        done = it + 1
        if run_dir is not None and rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
            _save(run_dir, model, opt, scaler, done)
    if world > 1:
        dist.barrier()
    return {"resumed_from": start, "final_loss": loss_value}


@torch.no_grad()
def evaluate_segmentation(model: SegModel, val_set: Dataset, *, num_classes: int, crop: int, stride: int,
                          device: torch.device, amp: Precision | None = None,
                          per_image: list | None = None) -> torch.Tensor:
    """Single-scale sliding-window evaluation; returns the (C + 1, C) confusion matrix summed over all ranks.
    `per_image` (one process only) receives each image's (intersection, union, ground truth) areas per class, the
    statistics the record's bootstrap intervals of mIoU and mAcc resample."""
    rank, world = dist_info()
    model.to(device).eval()
    conf = torch.zeros(num_classes + 1, num_classes, dtype=torch.int64, device=device)
    for i in _progress(range(rank, len(val_set), world), desc="segmentation eval", unit="img"):
        x, y = val_set[i]
        with (amp or Precision(device.type)).autocast():
            logits = slide_inference(model, x[None].to(device), crop, stride, num_classes)
        logits = F.interpolate(logits.float(), y.shape, mode="bilinear", align_corners=False)
        one = confusion_matrix(logits.argmax(1)[0], y.to(device), num_classes)
        conf += one
        if per_image is not None:
            inter, gt = one[:num_classes].diagonal(), one[:num_classes].sum(1)
            per_image.append(tuple(a.cpu().numpy() for a in (inter, gt + one.sum(0) - inter, gt)))
    if world > 1:
        dist.all_reduce(conf)
    return conf.cpu()
