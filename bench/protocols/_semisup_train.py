"""The two ways semisup trains: the whole network fine-tuned on the subset, or a logreg on frozen features.

Fine-tuning: backbone + linear head, every parameter trained, BatchNorm in train mode (SyncBN under torchrun),
per-group learning rates (SwAV's head lr), the preset's schedule per iteration, bf16 autocast on GPU (--amp: any dtype, any device). The state
after each finished epoch is written atomically to a run directory under the cache keyed by everything that
determines the run, and a re-run resumes after the last finished epoch.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .._io import sha256_json
from ..errors import BenchError
from ..backbones.features import compute_features
from ..data import cache_dir
from ..precision import Precision
from ..presets import preset_settings
from ..distributed import dist_info, maybe_ddp
from ..train import (RunDir, build_optimizer, check_finite, evaluate_top1_top5, lr_at,
                     rng_state, scaled_lr, scaled_step, set_lr)
from ._common import EpochHits
from ._linear_train import _transforms, make_head

__all__ = ["finetune", "logreg_on_subset", "AFTER_EPOCH_HOOKS"]

# hook(epoch) after each epoch's checkpoint; tests use it to simulate an interruption
AFTER_EPOCH_HOOKS: list[Callable[[int], None]] = []


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, mode: str):
        super().__init__()
        self.backbone, self.head, self.mode = backbone, head, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(compute_features(self.backbone, x, self.mode))


def _evaluate(model: nn.Module, loader, device: torch.device, prec: Precision,
              hits: list | None = None) -> tuple[float, float]:
    return evaluate_top1_top5(model, loader, device, prec.autocast(), hits)


def _train_epoch(model, opt, loader, device, epoch: int, steps: int, lr_of: Callable[[float], float],
                 prec: Precision, scaler: torch.amp.GradScaler) -> float:
    from tqdm.auto import tqdm
    model.train()
    total = 0.0
    bar = tqdm(loader, desc=f"semisup epoch {epoch}", unit="step", leave=False,
               disable=os.environ.get("BENCH_PROGRESS", "1") == "0" or dist_info()[0] != 0)
    for step, (images, target) in enumerate(bar):
        set_lr(opt, lr_of(epoch + step / steps))
        with prec.autocast():
            loss = F.cross_entropy(model(images.to(device, non_blocking=True)).float(), target.to(device))
        check_finite(loss, f"semi-supervised fine-tuning epoch {epoch} step {step}")
        scaled_step(loss, opt, scaler)
        total += float(loss.detach())
    return total / max(len(loader), 1)


def _optimizer(model: _Classifier, preset, batch: int):
    lr = scaled_lr(preset.base_lr, batch, preset.lr_scaling)
    head_scale = (preset.head_lr / lr) if preset.head_lr else 1.0
    groups = [{"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr_scale": 1.0},
              {"params": list(model.head.parameters()), "lr_scale": head_scale}]
    return build_optimizer(preset.optimizer, groups, lr, preset.momentum, preset.weight_decay), lr


def _one_run(ctx, preset, train_ds, eval_ds, num_classes: int, tag: str, *, every_epoch_eval: bool) -> dict:
    """Train on `train_ds`, evaluate on `eval_ds`; returns the history and settings. Resumable."""
    rank, world = dist_info()
    batch = min(preset.batch_size, 64) if ctx.quick else preset.batch_size
    epochs = min(preset.epochs, preset.quick_epochs) if ctx.quick else preset.epochs
    per_rank = max(1, batch // world)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=ctx.seed, drop_last=False)
    train_src, train_kw = ctx.loader_dataset(train_ds)
    eval_src, eval_kw = ctx.loader_dataset(Subset(eval_ds, range(rank, len(eval_ds), world)))
    loader = DataLoader(train_src, batch_size=per_rank, sampler=sampler, num_workers=ctx.workers,
                        pin_memory=ctx.device.type == "cuda", **train_kw)
    eval_loader = DataLoader(eval_src, batch_size=min(per_rank, 256), num_workers=ctx.workers,
                             pin_memory=ctx.device.type == "cuda", **eval_kw)
    backbone = copy.deepcopy(ctx.require_backbone("semi-supervised fine-tuning").model).to(ctx.device)
    mode = ctx.resolve_feature_mode(preset.feature_mode)
    with torch.no_grad():
        dim = compute_features(backbone.eval(), eval_ds[0][0].unsqueeze(0).to(ctx.device), mode).shape[1]
    backbone.requires_grad_(True)
    if world > 1 and ctx.device.type == "cuda":   # SyncBN exists only for GPU modules; CPU/gloo keeps per-rank BN
        backbone = nn.SyncBatchNorm.convert_sync_batchnorm(backbone)
    model = _Classifier(backbone, make_head(dim, num_classes, preset), mode).to(ctx.device)
    opt, lr = _optimizer(model, preset, batch)
    ddp = maybe_ddp(model, ctx.device)
    lr_kw = dict(base_lr=lr, epochs=epochs, warmup_epochs=preset.warmup_epochs, milestones=preset.milestones,
                 gamma=preset.gamma)
    steps = max(len(loader), 1)
    key = sha256_json({"weights": ctx.backbone.weights_id, "preset": preset_settings(preset), "tag": tag,
                       "batch": batch, "epochs": epochs, "n_train": len(train_ds), "seed": ctx.seed,
                       "world": world, "resolution": ctx.resolution, "mini": ctx.mini,
                       **({"amp": ctx.amp} if ctx.amp != "auto" else {})})[:24]
    run_dir = RunDir((ctx.cache_dir or cache_dir()) / "runs" / "semisup" / key)
    history, start = run_dir.resume(model, opt)
    prec = ctx.precision("train", "bfloat16")   # bf16 autocast on GPUs, as bench ran before --amp took a dtype
    scaler = prec.grad_scaler()
    kept = EpochHits(enabled=world == 1)
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        loss = _train_epoch(ddp, opt, loader, ctx.device, epoch, steps, lambda t: lr_at(preset.schedule, t, **lr_kw),
                            prec, scaler)
        row = {"epoch": epoch, "train_loss": loss}
        if every_epoch_eval or epoch == epochs - 1:
            hits = kept.batches()
            row["top1"], row["top5"] = _evaluate(model, eval_loader, ctx.device, prec, hits)
            kept.add(epoch, row["top1"], hits)
        history.append(row)
        run_dir.save({"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(), "history": history,
                      "rng": rng_state()})
        for hook in AFTER_EPOCH_HOOKS:
            hook(epoch)
    return {"history": history, "batch": batch, "epochs": epochs, "lr": lr, "world": world, "dim": dim,
            "mode": mode, "run_dir": str(run_dir.path), "resumed_from_epoch": start, "_kept": kept}


def _holdout(samples, subset_idx: np.ndarray, images: int, seed: int) -> np.ndarray:
    """BYOL's local validation images: drawn (seeded) from the train images outside the labelled subset."""
    rest = np.setdiff1d(np.arange(len(samples)), subset_idx)
    if not len(rest):
        raise BenchError("this preset selects its hyper-parameters on train images outside the labelled subset, "
                         "and the subset holds every train image; use a 1% / 10% subset or another preset")
    n = max(1, round(images * len(samples) / 1_281_167))
    return np.sort(np.random.default_rng(seed).choice(rest, size=min(n, len(rest)), replace=False))


def finetune(ctx, preset, subset_idx: np.ndarray, samples) -> tuple[dict, dict]:
    train_tf, eval_tf, train_spec, eval_spec = _transforms(ctx, preset)
    train_all = ctx.open_images("train", train_tf)
    val = ctx.open_images("val", eval_tf)
    num_classes = ctx.num_classes(np.array([t for _, t in samples]))
    details: dict = {"train_transform": train_spec, "eval_transform": eval_spec,
                     "paper_reports": "best epoch on val (selects on the reported split)" if preset.report == "max"
                     else "final epoch"}
    if preset.grid:
        hold_idx = _holdout(samples, subset_idx, preset.holdout_images, ctx.seed)
        hold = Subset(ctx.open_images("train", eval_tf), hold_idx.tolist())
        configs = _grid(preset.grid, ctx.quick)
        scores = []
        for cfg in configs:
            run = _one_run(ctx, dataclasses.replace(preset, **cfg), Subset(train_all, subset_idx.tolist()), hold,
                           num_classes, f"select:{sorted(cfg.items())}", every_epoch_eval=False)
            scores.append({**cfg, "holdout_top1": run["history"][-1]["top1"]})
        best = max(scores, key=lambda s: s["holdout_top1"])
        preset = dataclasses.replace(preset, **{k: best[k] for k in preset.grid})
        details["selection"] = {"split": f"{len(hold_idx)} held-out train images (not in the subset)",
                                "scores": scores, "chosen": {k: best[k] for k in preset.grid}}
    run = _one_run(ctx, preset, Subset(train_all, subset_idx.tolist()), val, num_classes, "final",
                   every_epoch_eval=preset.report == "max")
    evaluated = [h for h in run["history"] if "top1" in h]
    final, best = evaluated[-1], max(evaluated, key=lambda h: h["top1"])
    metrics = {"top1": final["top1"], "top5": final["top5"], "top1_max": best["top1"], "top5_at_max": best["top5"]}
    if preset.report == "max":
        details["paper_number_is"] = "top1_max"
    kept = run.pop("_kept")
    details.update(run)
    details["_samples"] = kept.samples(final["epoch"], best["epoch"], {"final": ("top1", "top5"),
                                                                       "best": ("top1_max", "top5_at_max")})
    return metrics, details


def _grid(grid: dict, quick: bool) -> list[dict]:
    import itertools
    keys = sorted(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    return combos[:2] if quick else combos


def logreg_on_subset(ctx, preset, subset_idx: np.ndarray) -> tuple[dict, dict]:
    """Frozen features of the subset → the logreg protocol's C selection and fit → top-1/top-5 on val."""
    from ..presets import resolve_preset
    from ._common import holdout_split, topk_percent, topk_samples
    from .logreg import LogregPreset, c_grid, fit_logreg, predict_scores, select_C
    lp, _ = resolve_preset("logreg", LogregPreset, preset.logreg_preset)
    mode = preset.feature_mode or lp.feature_mode   # the logreg preset's paper feature unless this preset fixes one
    train = ctx.features("train", lp.transform, feature_mode=mode)
    val = ctx.features("val", lp.transform, feature_mode=mode)
    x, y = train.features[subset_idx], train.labels[subset_idx]
    tr, ho = holdout_split(len(x), lp.holdout_fraction, lp.holdout_seed)
    grid = c_grid(lp.c_lo_exp, lp.c_hi_exp, lp.c_num if not ctx.quick else 12)
    num_classes = ctx.num_classes(train.labels, val.labels)
    fit_kw = dict(num_classes=num_classes, max_iter=lp.max_iter, tol=lp.tol, device=ctx.device)
    best_C, per_C = select_C(x[tr], y[tr], x[ho], y[ho], grid, **fit_kw)
    weights = fit_logreg(x, y, best_C, **fit_kw)
    scores = predict_scores(weights, val.features)
    metrics = topk_percent(scores, val.labels)
    return metrics, {"_samples": topk_samples(scores, val.labels), "C": best_C, "selection": f"C chosen on a seeded {lp.holdout_fraction:.0%} hold-out of the "
                                                f"subset", "scores_per_C": per_C, "logreg_preset": preset.logreg_preset}

