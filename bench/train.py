"""Small training toolkit shared by the protocols that train (linear probe, semi-supervised fine-tuning, dense tasks).

API (keep it small):
    LARS(params, lr, weight_decay=0, momentum=0.9, trust_coefficient=0.001)
        MAE `util/lars.py` transcribed: parameters with ndim ≤ 1 (biases, norms) get neither weight decay nor
        the trust-ratio scaling. (timm.optim.Lars differs: it adapts by param group, not by ndim, and adds eps.)
    build_optimizer(name, params, lr, momentum=0.9, weight_decay=0) -> Optimizer   # "sgd" | "nesterov" | "lars"
    scaled_lr(base_lr, batch_size, rule) -> float       # rule "linear": base × bs/256; "sqrt": base × √bs; "none"
    lr_at(schedule, progress_epochs, *, base_lr, epochs, warmup_epochs=0, milestones=(), gamma=0.1,
          min_lr=0) -> float
        schedule "constant" | "step" | "cosine" | "warmup_cosine"; progress_epochs is a float (per-iteration
        schedules pass epoch + it/iters_per_epoch, per-epoch schedules pass the integer epoch).
    set_lr(optimizer, lr)                               # every param group, keeping each group's "lr_scale"
    check_finite(loss, where) -> None                   # NonFiniteError on NaN/inf
    scaled_step(loss, opt, scaler)                      # zero_grad, backward and step through a GradScaler
    evaluate_top1_top5(model, loader, device, autocast) -> (top1, top5)   # percent, summed over DDP ranks
    RunDir(path): .load() -> dict | None, .resume(module, opt) -> (history, first epoch), .save(state: dict) (atomic)
    rng_state() -> dict ; set_rng_state(state)          # Python, NumPy and torch RNGs, saved with a checkpoint
    seed_everything(seed)                               # Python, NumPy and torch; the runner calls it before a run
The process-group helpers (dist_info, is_main, maybe_ddp) live in bench/distributed.py.

Checkpoints are written atomically (bench/_io.py) after every finished epoch; resuming loads the last one and
continues from the next epoch, restoring model, optimizer, scaler, RNG states and any history the caller keeps.
"""
from __future__ import annotations

import copy
import io
import logging
import math
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
import torch

from ._io import atomic_write_bytes
from .distributed import dist_info, is_main
from .errors import BenchError, NonFiniteError

_logger = logging.getLogger(__name__)

__all__ = ["LARS", "build_optimizer", "scaled_lr", "lr_at", "set_lr", "check_finite", "RunDir", "scaled_step", "seed_everything",
           "rng_state", "set_rng_state"]


class LARS(torch.optim.Optimizer):
    """LARS exactly as facebookresearch/mae:util/lars.py (used for MAE's linear probe)."""

    def __init__(self, params: Iterable, lr: float = 0, weight_decay: float = 0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:  # MAE: no weight decay and no LARS adaptation for biases and norm parameters
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(param_norm > 0.0,
                                    torch.where(update_norm > 0, g["trust_coefficient"] * param_norm / update_norm,
                                                one), one)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def build_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise BenchError(f"unknown optimizer {name!r}; use sgd, nesterov or lars")


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """The papers' batch-size scaling: linear (Goyal et al.: base × bs/256), sqrt (SimCLR v2), or none."""
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return base_lr
    raise BenchError(f"unknown lr scaling rule {rule!r}; use linear, sqrt or none")


def lr_at(schedule: str, progress_epochs: float, *, base_lr: float, epochs: int, warmup_epochs: float = 0,
          milestones: tuple[int, ...] = (), gamma: float = 0.1, min_lr: float = 0.0) -> float:
    """Learning rate after `progress_epochs` epochs of training.

    step: ×gamma at each milestone passed (MoCo `adjust_learning_rate`). cosine: base·½(1+cos(π·t/epochs))
    (MoCo v3, SimCLR, BYOL, DINO's CosineAnnealingLR to 0). warmup_cosine: linear warmup then half-cosine
    to min_lr (MAE `util/lr_sched.py`, per iteration).
    """
    t = progress_epochs
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * gamma ** sum(t >= m for m in milestones)
    if schedule == "cosine":
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * t / epochs))
    if schedule == "warmup_cosine":
        if t < warmup_epochs:
            return base_lr * t / warmup_epochs
        frac = (t - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
        return min_lr + (base_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * frac))
    raise BenchError(f"unknown schedule {schedule!r}; use constant, step, cosine or warmup_cosine")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def check_finite(loss: torch.Tensor, where: str,
                 fix: str = "lower the learning rate or check the features (no checkpoint written for this epoch)"
                 ) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteError(f"{where}: loss is {float(loss.detach().float().mean())}; {fix}")


def evaluate_top1_top5(model: torch.nn.Module, loader, device: torch.device, autocast,
                       hits: list | None = None) -> tuple[float, float]:
    """Top-1 / top-5 accuracy (percent) of `model` on `loader`, counted on every rank and summed, so each image
    counts once whatever the world size; `autocast` is the precision context the caller trains under. `hits`, when
    given, receives one (top-1, top-5) pair of bool arrays per batch (per-sample correctness, one process only)."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.no_grad(), autocast:
        for images, target in loader:
            target = target.to(device)
            logits = model(images.to(device, non_blocking=True)).float()
            hit = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(target.view(-1, 1))
            counts += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), torch.tensor(len(target))]).to(counts)
            if hits is not None:
                hits.append((hit[:, 0].cpu().numpy(), hit.any(1).cpu().numpy()))
    if dist_info()[1] > 1:
        torch.distributed.all_reduce(counts)
    return float(100 * counts[0] / counts[2]), float(100 * counts[1] / counts[2])


def scaled_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """One optimiser step through an AMP GradScaler (a no-op scaler when AMP is off)."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def rng_state() -> dict[str, torch.Tensor]:
    """Every RNG a training step may draw from (Python, numpy, torch, CUDA), as tensors only, so a run checkpoint
    is read back with weights_only=True: a `last.pt` found in a shared results/cache folder runs no code."""
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": torch.tensor([version, *mt], dtype=torch.int64),
             "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
             "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_extra": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    py = state["python"].tolist()
    gauss = state["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), gauss[0] if gauss else None))
    pos, has_gauss, cached = state["numpy_extra"].tolist()
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"].cpu()))


def seed_everything(seed: int) -> None:
    # Python's random too: augmentations written with it (the mmseg pipeline) are seeded with the rest
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


T = TypeVar("T")
# what a saved state that does not fit the run raises when applied: missing keys (KeyError), another architecture
# (load_state_dict's RuntimeError), optimiser groups of another size (ValueError), a value of the wrong type
_MISFIT = (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError)


class RunDir:
    """A training run's folder: `last.pt` holds the state after the last finished epoch (or iteration), written
    atomically. Every training protocol resumes through `restore`: state that fails to load or to fit the run is
    set aside (`last.pt.unusable`) with one warning and the run starts over; nothing else in the folder is touched.
    """

    def __init__(self, path: str | os.PathLike, name: str = "last.pt"):
        self.path = Path(path)
        self.name = name

    @property
    def checkpoint(self) -> Path:
        return self.path / self.name

    def set_aside(self, why: str) -> None:
        aside = self.checkpoint.with_name(self.checkpoint.name + ".unusable")
        os.replace(self.checkpoint, aside)
        _logger.warning("%s: cannot resume from it (%s); moved to %s, training from the start", self.checkpoint,
                        " ".join(why.split())[:160], aside.name)

    def load(self) -> dict[str, Any] | None:
        if not self.checkpoint.is_file():
            return None
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as e:
            # an older bench's file (pickled numpy RNG state), a foreign or a damaged one: never unpickled in
            # full; set aside, and the run starts over
            self.set_aside(str(e).splitlines()[0] if str(e) else type(e).__name__)
            return None
        if not isinstance(state, dict):
            self.set_aside(f"holds a {type(state).__name__}, not a training state")
            return None
        return state

    def restore(self, apply: Callable[[dict[str, Any]], T], *, protect: tuple = ()) -> T | None:
        """`apply(state)` with the saved state (it loads the model, optimiser, ... and returns where to go on), or
        None to start over: no state, or state that does not fit (another architecture, missing keys). Then the
        objects in `protect` (anything with state_dict/load_state_dict) get back what they held before."""
        if (state := self.load()) is None:
            return None
        before = [copy.deepcopy(obj.state_dict()) for obj in protect]
        try:
            return apply(state)
        except _MISFIT as e:
            for obj, sd in zip(protect, before):
                obj.load_state_dict(sd)
            self.set_aside(f"does not fit this run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return None

    def resume(self, module: torch.nn.Module, opt: torch.optim.Optimizer, key: str = "model"
               ) -> tuple[list[dict], int]:
        """Restore `state[key]`, optimiser and RNG from the last finished epoch: (history, first epoch to run)."""
        def apply(state):
            module.load_state_dict(state[key])
            opt.load_state_dict(state["opt"])
            history, epoch = list(state["history"]), int(state["epoch"]) + 1
            set_rng_state(state["rng"])
            return history, epoch
        return self.restore(apply, protect=(module, opt)) or ([], 0)

    def save(self, state: dict[str, Any]) -> None:
        if not is_main():
            return
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint, buf.getvalue())
