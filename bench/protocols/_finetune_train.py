"""The fine-tuning loop: rebuild the backbone with the recipe's drop path / pooling and a head, train every weight.

Per update: `accum` micro-batches (mixup/cutmix applied to each, as the papers' per-GPU batches), loss / accum,
backward (the recipe's bf16 / fp16 autocast on CUDA, --amp's on any device; fp16 through a GradScaler), optional gradient clipping, one AdamW step
over timm's layer-decay groups, the EMA updated, the lr set by timm's CosineLRScheduler. Under torchrun the
model is wrapped in DDP and each process takes batch / world images per update. The run state (model, optimiser,
scaler, EMA, history, RNG, position in the epoch) is written atomically after every epoch and every
`--ckpt-every` updates to a run directory under the cache keyed by everything that determines the run; a re-run
resumes there. With `--workers 0` a resumed run draws the same augmentations as an uninterrupted one: the
sampler's order is skipped forward and the RNG states restored after the loader is rebuilt.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from .._io import sha256_json
from ..backbones import Backbone
from ..backbones._build import create_model
from ..backbones.features import is_vit
from ..data import build_eval_transform, cache_dir
from ..distributed import dist_info, maybe_ddp
from ..errors import BenchError, CheckpointError
from ..precision import Precision
from ..presets import preset_settings
from ..train import RunDir, check_finite, evaluate_top1_top5, rng_state, set_rng_state
from ._common import EpochHits
from .finetune import FinetunePreset, scaled_finetune_lr

__all__ = ["finetune", "build_finetune_model", "param_groups", "make_mixup", "make_criterion", "make_scheduler",
           "AFTER_UPDATE_HOOKS"]

# hook(epoch, update_in_epoch) after every optimiser update (after any checkpoint it triggered); tests raise from
# one to simulate an interruption
AFTER_UPDATE_HOOKS: list[Callable[[int, int], None]] = []

PAPER_REPORTS = {"max": "max over epochs of val top-1 (the scripts' max_accuracy): selected on the val split itself",
                 "final": "the final epoch's val top-1"}


# --------------------------------------------------------------------------------------------------- the model
def build_finetune_model(backbone: Backbone, preset: FinetunePreset, num_classes: int, input_size: int
                         ) -> tuple[nn.Module, dict]:
    """The backbone's architecture rebuilt with drop path / pooling and a `num_classes` head, its weights copied.

    Strict: every backbone tensor must land; only the new head (and fc_norm, when global pooling adds it) may be
    missing, and only the pre-trained final norm may be left over when global pooling replaces it (MAE
    main_finetune.py: `assert set(msg.missing_keys) == {head.*, fc_norm.*}`)."""
    rep = backbone.report
    if rep.library != "timm":
        raise BenchError(f"fine-tuning rebuilds the backbone with drop path and a head through timm; {rep.arch} is "
                         f"a {rep.library} model (load it with a timm --arch, e.g. resnet50)")
    kwargs = dict(rep.model_kwargs)
    if preset.drop_path:
        kwargs["drop_path_rate"] = preset.drop_path
    vit = is_vit(backbone.model)
    if preset.global_pool and vit:
        kwargs["global_pool"] = preset.global_pool
    try:
        model, _ = create_model(rep.arch, **kwargs)
    except (TypeError, CheckpointError) as e:
        raise BenchError(f"cannot build {rep.arch} for fine-tuning with {kwargs} ({e}); use --set drop_path=0 or "
                         f"--set global_pool='' for this architecture") from e
    if rule := getattr(backbone.model, "pos_embed_rule", None):
        from ..backbones.pos_embed import install_pos_embed_rule
        install_pos_embed_rule(model, rule)
    src = backbone.model.state_dict()
    try:
        result = model.load_state_dict(src, strict=False)
    except RuntimeError as e:   # shape mismatches
        raise CheckpointError(f"{rep.source}: the fine-tuning model of {rep.arch} does not take the backbone's "
                              f"weights ({str(e).splitlines()[-1].strip()[:200]})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    new_ok = ("fc_norm.",) if kwargs.get("global_pool") == "avg" else ()
    bad_missing = [k for k in missing if not k.startswith(new_ok or ("\0",))]
    dropped_ok = ("norm.",) if kwargs.get("global_pool") == "avg" and getattr(model, "fc_norm", None) is not None \
        and isinstance(getattr(model, "norm", None), nn.Identity) else ()
    bad_unexpected = [k for k in result.unexpected_keys if not k.startswith(dropped_ok or ("\0",))]
    if bad_missing or bad_unexpected:
        raise CheckpointError(f"{rep.source}: the fine-tuning model of {rep.arch} does not take the backbone's "
                              f"weights (missing {bad_missing[:3]}, unexpected {bad_unexpected[:3]})")
    if vit and hasattr(model, "set_input_size"):
        from ..backbones.pos_embed import set_vit_input_size
        set_vit_input_size(model, (input_size, input_size))   # the grid is resampled once and then learnt
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    nn.init.trunc_normal_(head.weight, std=preset.head_init_std)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.weight.mul_(preset.head_init_scale)
        head.bias.mul_(preset.head_init_scale)
    new = sorted(set(missing) | {k for k in model.state_dict() if k not in src and not k.endswith("num_batches_tracked")})
    info = {"model_kwargs": kwargs, "new_tensors": new, "dropped_tensors": sorted(result.unexpected_keys),
            "pos_embed_rule": getattr(model, "pos_embed_rule", None),
            "grid": list(model.patch_embed.grid_size) if vit else None}
    return model, info


def param_groups(model: nn.Module, preset: FinetunePreset) -> list[dict]:
    """timm's layer-wise decay groups (BEiT optim_factory / MAE util/lr_decay.py: scale decay^(L - layer), no
    weight decay on 1-D tensors and the model's no_weight_decay() names); plain decay groups at layer_decay 1."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if preset.layer_decay < 1.0:
        return param_groups_layer_decay(_HeadGroupsNorm(model), preset.weight_decay, no_weight_decay_list=skip,
                                        layer_decay=preset.layer_decay)
    return param_groups_weight_decay(model, preset.weight_decay, no_weight_decay_list=skip)


class _HeadGroupsNorm:
    """The model as param_groups_layer_decay sees it, with the final norm in the head's layer: timm's ViT matcher
    gives `norm` a layer of its own (scale decay^1), MAE get_layer_id_for_vit and BEiT get_num_layer_for_vit put
    every tensor outside the stem and blocks at the top (scale 1)."""

    def __init__(self, model: nn.Module):
        self.model = model
        if hasattr(model, "group_matcher"):
            self.group_matcher = self._matcher

    def named_parameters(self, *args, **kwargs):
        return self.model.named_parameters(*args, **kwargs)

    def _matcher(self, coarse: bool = False) -> dict:
        groups = dict(self.model.group_matcher(coarse=coarse))
        if isinstance(groups.get("blocks"), (list, tuple)):
            groups["blocks"] = [g for g in groups["blocks"] if not str(g[0]).startswith(r"^norm")]
        return groups


def make_scheduler(opt, preset: FinetunePreset, epochs: int, warmup_epochs: float, steps_per_epoch: int,
                   warmup_lr: float, min_lr: float):
    """timm CosineLRScheduler: per update with the warmup as a prefix (MAE util/lr_sched.py, BEiT, SimMIM) or per
    epoch from t=0 (DeiT through timm 0.3's create_scheduler)."""
    from timm.scheduler import CosineLRScheduler
    if preset.schedule_per == "iter":
        total, warm = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
        return CosineLRScheduler(opt, t_initial=max(total - warm, 1) if preset.warmup_prefix else total,
                                 lr_min=min_lr, warmup_t=warm, warmup_lr_init=warmup_lr,
                                 warmup_prefix=preset.warmup_prefix, t_in_epochs=False)
    return CosineLRScheduler(opt, t_initial=epochs, lr_min=min_lr, warmup_t=math.ceil(warmup_epochs),
                             warmup_lr_init=warmup_lr, warmup_prefix=preset.warmup_prefix, t_in_epochs=True)


def make_mixup(preset: FinetunePreset, num_classes: int):
    """timm Mixup (label smoothing folded into its soft targets), or None when the recipe mixes nothing."""
    if preset.mixup <= 0 and preset.cutmix <= 0:
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=preset.mixup, cutmix_alpha=preset.cutmix, prob=preset.mixup_prob,
                 switch_prob=preset.mixup_switch_prob, mode=preset.mixup_mode, label_smoothing=preset.smoothing,
                 num_classes=num_classes)


def make_criterion(preset: FinetunePreset, mixup) -> nn.Module:
    """MAE main_finetune.py / DeiT main.py: soft-target CE with mixup, else label-smoothing CE, else CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if mixup is not None:
        return SoftTargetCrossEntropy()
    if preset.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=preset.smoothing)
    return nn.CrossEntropyLoss()


# ---------------------------------------------------------------------------------------------------- the data
def _posterize_zero_bits_ok(img, bits_to_keep, **_):
    """timm's posterize as it ran under Pillow <= 12: 0 bits kept is a black image (Pillow 13 raises instead).
    RandAugment's increasing posterize reaches 0 bits at magnitude 10, which mstd 0.5 draws now and then."""
    from PIL import ImageOps
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits_to_keep)


def _transforms(ctx, preset: FinetunePreset):
    """timm create_transform for training (MAE util/datasets.py build_transform); resize-crop for eval."""
    from timm.data import auto_augment, create_transform
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        if auto_augment.NAME_TO_OP.get(name) is auto_augment.posterize:
            auto_augment.NAME_TO_OP[name] = _posterize_zero_bits_ok
    backbone = ctx.require_backbone("fine-tuning")
    eval_spec = ctx.transform_spec({"resize": int(preset.input_size / preset.crop_pct), "crop": preset.input_size,
                                    "interpolation": preset.interpolation})
    size = eval_spec.crop
    pre = backbone.preprocessing
    train_kw = dict(input_size=size, is_training=True, color_jitter=preset.color_jitter,
                    auto_augment=preset.auto_augment or None, interpolation=preset.interpolation,
                    re_prob=preset.reprob, re_mode=preset.remode, re_count=preset.recount,
                    mean=tuple(pre.mean), std=tuple(pre.std))
    train_spec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in train_kw.items()}
    return create_transform(**train_kw), build_eval_transform(eval_spec), train_spec, eval_spec.to_dict(), size


class _SkipSampler(Sampler):
    """The wrapped sampler's order without its first `skip` indices (resuming inside an epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)


class _LabelledSubset(Subset):
    @property
    def targets(self):
        return [self.dataset.targets[i] for i in self.indices]


# ------------------------------------------------------------------------------------------------ train / eval
def evaluate(model: nn.Module, loader, device: torch.device, prec: Precision,
             hits: list | None = None) -> tuple[float, float]:
    return evaluate_top1_top5(model, loader, device, prec.autocast(), hits)


def _run_key(ctx, preset, batch: int, epochs: int, micro: int, lrs: tuple[float, ...]) -> str:
    return sha256_json({"weights": ctx.backbone.weights_id, "preset": preset_settings(preset), "batch": batch,
                        "lrs": list(lrs),
                        "epochs": epochs, "micro": micro, "dataset": ctx.dataset, "seed": ctx.seed,
                        "root": str(ctx.data_root.path) if ctx.data_root else None, "quick": ctx.quick,
                        "resolution": ctx.resolution, "mini": ctx.mini, "world": dist_info()[1],
                        "amp": ctx.device.type == "cuda" if ctx.amp == "auto" else ctx.amp})[:24]


def finetune(ctx, preset: FinetunePreset) -> tuple[dict, dict]:
    rank, world = dist_info()
    device = ctx.device
    train_tf, eval_tf, train_spec, eval_spec, size = _transforms(ctx, preset)
    train_ds = ctx.open_images(preset.train_split, train_tf)
    if ctx.quick and preset.quick_train_subset and len(train_ds) > preset.quick_train_subset:
        keep = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(ctx.seed))
        train_ds = _LabelledSubset(train_ds, keep[:preset.quick_train_subset].sort().values.tolist())
    eval_ds = ctx.open_images(preset.eval_split, eval_tf)
    for split, ds in ((preset.train_split, train_ds), (preset.eval_split, eval_ds)):
        ctx.inputs[f"{ctx.dataset}/{split}"] = {"source": "images", "count": len(ds)}
    num_classes = ctx.num_classes(*(np.asarray(getattr(d, "targets", [0])) for d in (train_ds, eval_ds)))
    batch = min(preset.batch_size, preset.quick_batch_size) if ctx.quick else preset.batch_size
    epochs = min(preset.epochs, preset.quick_epochs) if ctx.quick else preset.epochs
    # --quick keeps the recipe's warmup fraction, so the peak lr is reached
    warmup = preset.warmup_epochs * epochs / preset.epochs
    per_rank = max(1, batch // world)
    micro = min(ctx.options.get("micro_batch") or per_rank, per_rank)
    accum = math.ceil(per_rank / micro)
    if batch % world or per_rank % micro:   # the lr rule is stated for the batch that actually steps
        raise BenchError(f"a global batch of {batch} does not split into {world} process(es) x micro-batches of "
                         f"{micro}; choose --micro-batch dividing {per_rank} (or --set batch_size=N)")
    mixup = make_mixup(preset, num_classes)
    if mixup is not None and micro % 2:
        raise BenchError(f"mixup/cutmix pairs images within a batch; the per-process micro-batch {micro} is odd: "
                         f"choose an even --micro-batch or batch_size")
    if preset.repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler
        # DeiT's RASampler takes len // 256 × 256 images per epoch; a set smaller than that (a quick subset) all
        sampler = RepeatAugSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                   selected_round=256 if len(train_ds) >= 256 * world else 0)
    else:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=ctx.seed,
                                     drop_last=True)
    train_src, train_kw = ctx.loader_dataset(train_ds)
    eval_src, eval_kw = ctx.loader_dataset(Subset(eval_ds, range(rank, len(eval_ds), world)))
    pin = device.type == "cuda"
    eval_loader = DataLoader(eval_src, batch_size=min(micro, 256), num_workers=ctx.workers, pin_memory=pin,
                             **eval_kw)
    # MAE / DeiT drop the last incomplete batch (drop_last=True): mixup needs full, even batches
    steps = len(sampler) // micro // accum
    if steps < 1:
        raise BenchError(f"{len(train_ds)} training images give no full update of {per_rank} per process; lower "
                         f"batch_size (--set batch_size=N)")

    model, model_info = build_finetune_model(ctx.backbone, preset, num_classes, size)
    model.to(device)
    # --quick runs a small batch at the recipe's own peak lr (scaled to its global batch): a batch-scaled lr
    # (MAE: 1.25e-4 at 64) barely moves a head initialised at std 2e-5 in the few updates a smoke run has
    lr, warmup_lr, min_lr = scaled_finetune_lr(preset, preset.batch_size if ctx.quick else batch)
    opt = torch.optim.AdamW(param_groups(model, preset), lr=lr, betas=tuple(preset.betas), eps=preset.opt_eps)
    sched = make_scheduler(opt, preset, epochs, warmup, steps, warmup_lr, min_lr)
    prec = ctx.precision("train", preset.amp_dtype)   # the recipe's dtype on GPUs; a GradScaler for float16
    scaler = prec.grad_scaler()
    ema = None
    if preset.model_ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=preset.model_ema_decay)
    criterion = make_criterion(preset, mixup)
    ddp = maybe_ddp(model, device)

    run_dir = RunDir((ctx.cache_dir or cache_dir()) / "runs" / "finetune" / _run_key(ctx, preset, batch, epochs, micro,
                                                                              (lr, warmup_lr, min_lr)))
    def apply(state):
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        epoch, update = int(state["epoch"]), int(state["update"])
        partial = (float(state["loss_sum"][0]), int(state["loss_sum"][1]))   # the resumed epoch's loss so far
        if update >= steps:
            epoch, update, partial = epoch + 1, 0, (0.0, 0)
        return list(state["history"]), epoch, update, dict(state["rng"]), partial

    protect = (model, opt, scaler) + ((ema.module,) if ema is not None else ())
    history, start_epoch, start_update, pending_rng, partial = (run_dir.restore(apply, protect=protect)
                                                                or ([], 0, 0, None, (0.0, 0)))
    resumed_from = {"epoch": start_epoch, "update": start_update} if pending_rng is not None else None
    every = int(ctx.options.get("ckpt_every") or 0)

    def save(epoch: int, update: int, loss_sum: tuple[float, int] = (0.0, 0)) -> None:
        run_dir.save({"epoch": epoch, "update": update, "loss_sum": torch.tensor(loss_sum, dtype=torch.float64),
                      "model": model.state_dict(), "opt": opt.state_dict(),
                      "scaler": scaler.state_dict(), "ema": ema.module.state_dict() if ema is not None else {},
                      "history": history, "rng": rng_state()})

    from tqdm.auto import tqdm
    kept = EpochHits(enabled=world == 1)   # per-sample correctness of the last and the best epoch
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        skip = start_update * accum * micro if epoch == start_epoch else 0
        loader = DataLoader(train_src, batch_size=micro, sampler=_SkipSampler(sampler, skip) if skip else sampler,
                            num_workers=ctx.workers, pin_memory=pin, drop_last=True, **train_kw)
        # creating the iterator draws from the torch RNG: a state saved at an epoch's end is restored before it,
        # one saved inside an epoch (its iterator already made) after it
        if pending_rng is not None and not skip:
            set_rng_state(pending_rng)
            pending_rng = None
        it = iter(loader)
        if pending_rng is not None:
            set_rng_state(pending_rng)
            pending_rng = None
        if preset.schedule_per == "epoch":
            sched.step(max(epoch - 1, 0))   # DeiT: lr_scheduler.step(epoch) after each epoch
        model.train()
        first = start_update if epoch == start_epoch else 0
        total, n = partial if epoch == start_epoch else (0.0, 0)
        bar = tqdm(total=steps - first, desc=f"finetune epoch {epoch}", unit="step", leave=False,
                   disable=os.environ.get("BENCH_PROGRESS", "1") == "0" or rank != 0)
        for update in range(first, steps):
            if preset.schedule_per == "iter":
                sched.step_update(epoch * steps + update)
            for a in range(accum):
                images, target = next(it)
                images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
                if mixup is not None:
                    images, target = mixup(images, target)
                sync = a == accum - 1 or not hasattr(ddp, "no_sync")
                with (ddp.no_sync() if not sync else contextlib.nullcontext()), prec.autocast():
                    loss = criterion(ddp(images).float(), target)
                check_finite(loss, f"fine-tuning epoch {epoch} update {update}",
                             "lower the learning rate (--set base_lr=...) or use bfloat16; the run checkpoint "
                             "holds the last good state")
                scaler.scale(loss / accum).backward()
                total, n = total + float(loss.detach()), n + 1
            if preset.clip_grad:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), preset.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step=epoch * steps + update)
            bar.update()
            if every and (update + 1) % every == 0 and update + 1 < steps:
                save(epoch, update + 1, (total, n))
            for hook in AFTER_UPDATE_HOOKS:
                hook(epoch, update)
        bar.close()
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "lr_end": max(g["lr"] for g in opt.param_groups)}
        hits = kept.batches()
        row["top1"], row["top5"] = evaluate(model, eval_loader, device, prec, hits)
        kept.add(epoch, row["top1"], hits)
        if ema is not None:
            row["top1_ema"], row["top5_ema"] = evaluate(ema.module, eval_loader, device, prec)
        history.append(row)
        save(epoch + 1, 0)

    classifier = _save_model(ctx, run_dir, model, train_ds, eval_spec, preset, num_classes, size)
    final, best = history[-1], max(history, key=lambda h: h["top1"])   # first maximum, as `acc1 > max_accuracy`
    metrics = {"top1": final["top1"], "top5": final["top5"], "top1_max": best["top1"], "top5_at_max": best["top5"]}
    if ema is not None:
        metrics.update(top1_ema=final["top1_ema"], top5_ema=final["top5_ema"])
    details = {"paper_reports": PAPER_REPORTS[preset.reported],
               "paper_number_is": "top1_max" if preset.reported == "max" else "top1",
               "note": "top1/top5 are the final epoch; top1_max is the best epoch chosen on the eval split",
               "final_epoch": final["epoch"], "best_epoch": best["epoch"], "history": history,
               "batch": batch, "per_process_batch": per_rank, "micro_batch": micro, "accumulation": accum,
               "world": world, "updates_per_epoch": steps, "epochs": epochs, "warmup_epochs": warmup,
               "lr": lr, "warmup_lr": warmup_lr, "min_lr": min_lr, "num_classes": num_classes,
               "input_size": size, "train_transform": train_spec, "eval_transform": eval_spec,
               "model": model_info, "run_dir": str(run_dir.path), "resumed_from": resumed_from,
               "classifier": classifier,
               # popped by run_finetune into ProtocolResult.samples (the record's bootstrap intervals)
               "_samples": kept.samples(final["epoch"], best["epoch"], {"final": ("top1", "top5"),
                                                                        "best": ("top1_max", "top5_at_max")})}
    return metrics, details


def _save_model(ctx, run_dir, model, train_ds, eval_spec: dict, preset, num_classes: int, size: int) -> dict | None:
    """The final fine-tuned network as a weights-only file beside the run (bench.classifier), for robustness."""
    import dataclasses

    from ..classifier import dataset_classes, save_classifier
    from ..distributed import is_main
    classes = dataset_classes(train_ds) or []
    if len(classes) != num_classes:
        return None
    meta = {"weights_id": ctx.backbone.weights_id, "classes": classes, "eval_transform": eval_spec,
            "preset": dataclasses.asdict(preset), "input_size": size, "protocol": "finetune"}
    if not is_main():
        return {**meta, "kind": "finetune"}
    return save_classifier(run_dir.path, "finetune", model.state_dict(), meta)

