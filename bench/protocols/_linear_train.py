"""The papers' augmented linear probe: one head on a frozen backbone, trained for epochs, resumable, DDP-aware.

Per step: the frozen backbone (eval mode, under bf16 autocast on GPU) embeds a batch of augmented images,
the fp32 head takes an optimiser step. A preset's batch may exceed what fits at once (MAE: 16,384): the images
are then embedded in micro-batches (`--micro-batch`) whose features are concatenated before ONE head step, so the
step — including MAE's BatchNorm statistics — is that of the full per-process batch, not an accumulation.
Under torchrun each process takes batch/world images per step (DistributedSampler, seeded per epoch), the head is
wrapped in DistributedDataParallel, and only rank 0 writes the checkpoint. After every epoch the head is
evaluated on the eval split and the state (head, optimiser, history, RNG) is written atomically to a run
directory under the cache keyed by everything that determines the run; a re-run resumes after the last
finished epoch.
"""
from __future__ import annotations

import math
import os
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .._io import sha256_json
from ..augment import build_train_transform
from ..data import build_eval_transform
from ..presets import preset_settings
from ..distributed import dist_info, maybe_ddp
from ..train import (RunDir, build_optimizer, check_finite, lr_at,
                     rng_state, scaled_lr, set_lr)
from . import ProtocolResult
from ._common import EpochHits

__all__ = ["run_augmented", "make_head", "AFTER_EPOCH_HOOKS"]

# Called as hook(epoch) after each epoch's checkpoint is written; tests use it to simulate an interruption.
AFTER_EPOCH_HOOKS: list[Callable[[int], None]] = []

PAPER_REPORTS = {"max": "max over epochs of val top-1 (best_acc1 / max_accuracy): selected on the val split itself",
                 "final": "the final epoch's val top-1"}


class _LabelledSubset(Subset):
    @property
    def targets(self):
        return [self.dataset.targets[i] for i in self.indices]


def make_head(dim: int, num_classes: int, preset) -> nn.Module:
    """nn.Linear with the paper's init; MAE puts BatchNorm1d(affine=False, eps=1e-6) in front."""
    fc = nn.Linear(dim, num_classes)
    if preset.head_init == "default":          # PyTorch's own Linear init (SwAV's eval_semisup.py)
        pass
    elif preset.head_init == "zeros":            # SimCLR zero_init_logits_layer
        nn.init.zeros_(fc.weight)
    elif preset.head_init == "trunc_normal":   # MAE trunc_normal_(std=0.01)
        nn.init.trunc_normal_(fc.weight, std=preset.head_init_std)
    else:                                      # MoCo / DINO normal_(0, 0.01)
        nn.init.normal_(fc.weight, 0.0, preset.head_init_std)
    if preset.head_init != "default":
        nn.init.zeros_(fc.bias)
    if preset.head_bn:
        return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=1e-6), fc)
    return fc


def _transforms(ctx, preset):
    backbone = ctx.require_backbone("the augmented linear probe")
    mean_std = {"mean": None, "std": None} if not preset.normalize else {}
    eval_spec = ctx.transform_spec({**preset.eval_transform, **mean_std})
    train_spec = dict(preset.train_transform)
    if ctx.resolution or ctx.mini:
        train_spec["size"] = eval_spec.crop
    if preset.normalize:
        train_spec.update(mean=list(backbone.preprocessing.mean), std=list(backbone.preprocessing.std))
    return build_train_transform(train_spec), build_eval_transform(eval_spec), train_spec, eval_spec.to_dict()


def _embed(ctx, mode: str, images: torch.Tensor) -> torch.Tensor:
    # the reference probes (MoCo v3, DINOv2) run the frozen backbone under bf16 autocast on GPUs
    with torch.no_grad(), ctx.precision("backbone", "bfloat16").autocast():
        return ctx.backbone.features(images.to(ctx.device, non_blocking=True), mode).float()


def _evaluate(ctx, mode: str, head: nn.Module, loader, hits: list | None = None) -> tuple[float, float]:
    head.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        for images, target in loader:
            target = target.to(ctx.device)
            top5 = head(_embed(ctx, mode, images)).topk(min(5, head_out(head)), dim=1).indices
            hit = top5.eq(target.view(-1, 1))
            counts += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), torch.tensor(len(target))]).to(counts)
            if hits is not None:
                hits.append((hit[:, 0].cpu().numpy(), hit.any(1).cpu().numpy()))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)
    return float(100 * counts[0] / counts[2]), float(100 * counts[1] / counts[2])


def head_out(head: nn.Module) -> int:
    return [m for m in head.modules() if isinstance(m, nn.Linear)][0].out_features


def _train_epoch(ctx, mode, head, opt, loader, accum: int, epoch: int, lr_of: Callable[[float], float],
                 steps: int) -> float:
    from tqdm.auto import tqdm
    head.train()
    feats, targets, step, total = [], [], 0, 0.0
    bar = tqdm(total=steps, desc=f"linear epoch {epoch}", unit="step", leave=False,
               disable=os.environ.get("BENCH_PROGRESS", "1") == "0" or dist_info()[0] != 0)
    for i, (images, target) in enumerate(loader):
        feats.append(_embed(ctx, mode, images))
        targets.append(target.to(ctx.device))
        if len(feats) < accum and i + 1 < len(loader):
            continue
        set_lr(opt, lr_of(epoch + step / steps))
        loss = F.cross_entropy(head(torch.cat(feats)), torch.cat(targets))
        check_finite(loss, f"linear probe epoch {epoch} step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()
        feats, targets, step = [], [], step + 1
        bar.update()
    bar.close()
    return total / max(step, 1)


def _run_key(ctx, preset, batch: int, epochs: int, mode: str) -> str:
    return sha256_json({"weights": ctx.backbone.weights_id, "preset": preset_settings(preset), "batch": batch,
                        "epochs": epochs, "mode": mode, "dataset": ctx.dataset, "seed": ctx.seed,
                        "root": str(ctx.data_root.path) if ctx.data_root else None,
                        "resolution": ctx.resolution, "mini": ctx.mini, "world": dist_info()[1],
                        **({"amp": ctx.amp} if ctx.amp != "auto" else {})})[:24]


def run_augmented(ctx, preset) -> ProtocolResult:
    rank, world = dist_info()
    train_tf, eval_tf, train_spec, eval_spec = _transforms(ctx, preset)
    mode = ctx.resolve_feature_mode(preset.feature_mode)
    ctx.backbone.model.to(ctx.device).eval().requires_grad_(False)   # frozen, BN on running statistics
    train_ds = ctx.open_images(preset.train_split, train_tf)
    if ctx.quick and len(train_ds) > preset.quick_train_images:   # smoke run: a seeded subset of train
        keep = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(ctx.seed))
        train_ds = _LabelledSubset(train_ds, keep[:preset.quick_train_images].sort().values.tolist())
    eval_ds = ctx.open_images(preset.eval_split, eval_tf)
    batch = min(preset.batch_size, preset.quick_batch_size) if ctx.quick else preset.batch_size
    epochs = min(preset.epochs, preset.quick_epochs) if ctx.quick else preset.epochs
    per_rank = max(1, batch // world)
    micro = min(ctx.options.get("micro_batch") or per_rank, per_rank)
    accum = math.ceil(per_rank / micro)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=ctx.seed,
                                 drop_last=preset.drop_last)
    train_src, train_kw = ctx.loader_dataset(train_ds)
    eval_src, eval_kw = ctx.loader_dataset(Subset(eval_ds, range(rank, len(eval_ds), world)))
    loader = DataLoader(train_src, batch_size=micro, sampler=sampler, num_workers=ctx.workers,
                        pin_memory=ctx.device.type == "cuda", drop_last=preset.drop_last, **train_kw)
    eval_loader = DataLoader(eval_src, batch_size=min(micro, 256), num_workers=ctx.workers,
                             pin_memory=ctx.device.type == "cuda", **eval_kw)
    steps = math.ceil(len(loader) / accum)
    num_classes = ctx.num_classes(*(torch.as_tensor(getattr(d, "targets", [0])).numpy() for d in (train_ds, eval_ds)))
    dim = _embed(ctx, mode, eval_ds[0][0].unsqueeze(0)).shape[1]
    head = make_head(dim, num_classes, preset).to(ctx.device)
    lr = scaled_lr(preset.base_lr, batch, preset.lr_scaling)
    opt = build_optimizer(preset.optimizer, head.parameters(), lr, preset.momentum, preset.weight_decay)
    head_ddp = maybe_ddp(head, ctx.device)
    lr_kw = dict(base_lr=lr, epochs=epochs, warmup_epochs=preset.warmup_epochs, milestones=preset.milestones)
    per_iter = preset.schedule_per == "iter"

    def lr_of(t: float) -> float:
        return lr_at(preset.schedule, t if per_iter else math.floor(t), **lr_kw)

    from ..data import cache_dir
    run_dir = RunDir((ctx.cache_dir or cache_dir()) / "runs" / "linear" / _run_key(ctx, preset, batch, epochs, mode))
    history, start = run_dir.resume(head, opt, key="head")
    kept = EpochHits(enabled=world == 1)   # after a resume, an earlier best epoch has none (EpochHits.samples)
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        loss = _train_epoch(ctx, mode, head_ddp, opt, loader, accum, epoch, lr_of, steps)
        hits = kept.batches()
        top1, top5 = _evaluate(ctx, mode, head, eval_loader, hits)
        kept.add(epoch, top1, hits)
        history.append({"epoch": epoch, "train_loss": loss, "top1": top1, "top5": top5, "lr_end": opt.param_groups[0]["lr"]})
        run_dir.save({"epoch": epoch, "head": head.state_dict(), "opt": opt.state_dict(), "history": history,
                      "rng": rng_state()})
        for hook in AFTER_EPOCH_HOOKS:
            hook(epoch)
    classifier = _save_head(ctx, run_dir, head, mode, train_ds, eval_spec, num_classes)
    return _result(preset, history, dict(batch=batch, epochs=epochs, lr=lr, per_rank=per_rank, micro=micro,
                                         world=world, dim=dim, mode=mode, run_dir=str(run_dir.path),
                                         resumed_from_epoch=start, train_transform=train_spec,
                                         eval_transform=eval_spec, classifier=classifier), kept)


def _save_head(ctx, run_dir, head, mode: str, train_ds, eval_spec: dict, num_classes: int) -> dict | None:
    """The final head as a weights-only file beside the run (bench.classifier), for the robustness protocol."""
    from ..classifier import dataset_classes, save_classifier
    from ..distributed import is_main
    classes = dataset_classes(train_ds) or []
    if len(classes) != num_classes:   # not a class-folder dataset: no wnids to match the robustness sets by
        return None
    meta = {"weights_id": ctx.backbone.weights_id, "feature_mode": mode, "classes": classes,
            "eval_transform": eval_spec, "protocol": "linear"}
    if not is_main():
        return {**meta, "kind": "linear"}
    return save_classifier(run_dir.path, "linear", head.state_dict(), meta)


def _result(preset, history: list[dict], info: dict, kept: EpochHits | None = None) -> ProtocolResult:
    final = history[-1]
    best = max(history, key=lambda h: h["top1"])   # first maximum, as `acc1 > best_acc1` in the papers' loops
    metrics = {"top1": final["top1"], "top5": final["top5"], "top1_max": best["top1"],
               "top5_at_max": best["top5"]}
    details = {"final_epoch": final["epoch"], "best_epoch": best["epoch"], "paper_reports": PAPER_REPORTS[preset.reported],
               "paper_number_is": "top1_max" if preset.reported == "max" else "top1",
               "note": "top1/top5 are the final epoch; top1_max is the best epoch chosen on the eval split",
               "history": history, **info}
    headline = ("top1_max", "top1", "top5") if preset.reported == "max" else ("top1", "top5", "top1_max")
    samples = kept.samples(final["epoch"], best["epoch"], {"final": ("top1", "top5"),
                                                           "best": ("top1_max", "top5_at_max")}) if kept else {}
    return ProtocolResult(metrics, details=details, headline=headline, samples=samples)
