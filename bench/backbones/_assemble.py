"""From a converted backbone state dict to a loaded timm/torchvision model: choose the architecture and its
arguments, adapt resolution-dependent tensors, then load with strict accounting (coverage, shapes, leftovers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ._arch import ArchGuess, arch_kind, guess_arch, to_timm_keys
from ._build import split_arch
from .families import Family

__all__ = ["ModelPlan", "plan_model", "fit_resolution", "load_strict", "counted", "FROM_KEYS"]

# `--arch from-keys`: build exactly what the keys describe, even a configuration no one published.
FROM_KEYS = "from-keys"


@dataclass
class ModelPlan:
    arch: str
    kwargs: dict[str, Any]
    kind: str | None
    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    width: int = 0


def plan_model(sd: dict[str, torch.Tensor], arch: str | None, family: Family, source: str) -> ModelPlan:
    """Pick the model for a backbone state dict: `arch` if given (plus what the weights need), else inferred.

    Inferred structure (depth, width, img_size) only applies to an inferred arch: a user's --arch is taken
    literally, so a wrong one fails the strict load below instead of being silently reshaped. An inferred shape
    that no one published (a file cut short looks like a smaller model) is refused unless `arch` is FROM_KEYS.
    """
    kind = arch_kind(sd)
    explicit = arch not in (None, FROM_KEYS)
    try:
        guess = guess_arch(sd) if kind else None
    except CheckpointError:
        if not explicit:
            raise
        guess = None   # the shapes fit none of the kind's models (DeiT's dist_token): --arch's own filter decides
    if kind and explicit:
        _check_arch_kind(arch, kind, guess, source)
        if guess is None or _other_family(arch, guess):   # EVA's q_bias looks like BEiT's
            looks = f"look like {guess.arch}" if guess else f"fit no {kind} bench infers"
            return ModelPlan(arch, {}, None, dict(sd), notes=[
                f"the keys {looks}, and --arch {arch} is another timm family: keys mapped by {arch}'s own timm "
                f"checkpoint filter"])
    sd, dropped = to_timm_keys(sd, kind)
    if arch is None or arch == FROM_KEYS:
        if guess is None or guess.arch is None:
            why = "; ".join(guess.notes) if guess else f"keys like {sorted(sd)[:3]} are not a ViT/BEiT/ResNet"
            raise CheckpointError(f"{source}: cannot tell the architecture ({why}); pass --arch")
        if guess.unpublished and arch is None:   # a file cut short loads as a smaller model at "100% coverage"
            raise CheckpointError(f"{source}: {guess.unpublished}; the file looks truncated (re-download it), or "
                                  f"pass --arch {FROM_KEYS} if the model really has this shape")
        if guess.unpublished:
            guess.notes.append(f"built from the keys (--arch {FROM_KEYS}): {guess.unpublished.split(';')[0]}")
        arch, kwargs = guess.arch, {**guess.structure, **guess.needs}
    else:
        kwargs = dict(guess.needs) if guess else {}
    library, _ = split_arch(arch)
    if library == "torchvision":
        kwargs = {}
    elif kind in ("vit", "dinov2"):
        kwargs.update(family.model_kwargs.get("vit", {}))
        kwargs["dynamic_img_size"] = True   # any eval resolution; pos_embed interpolated at run time like DINO(v2)
    width = int(sd["cls_token"].shape[-1]) if "cls_token" in sd else 0
    return ModelPlan(arch, kwargs, kind, sd, dropped, list(guess.notes if isinstance(guess, ArchGuess) else []),
                     width)


_TRANSFORMER_PREFIXES = ("vit", "deit", "beit", "eva", "flexivit")
# timm modules / torchvision name starts of plain convolutional networks (a ViT file cannot be one of them)
_CONVNET_MODULES = frozenset({"resnet", "resnetv2", "resnest", "res2net", "regnet", "efficientnet", "mobilenetv3",
                              "convnext", "densenet", "vgg", "dla", "dpn", "senet", "sknet", "byobnet", "nfnet",
                              "rexnet", "ghostnet", "inception_v3", "xception", "cspnet", "hrnet"})
_CONVNET_PREFIXES = ("resnet", "wide_resnet", "resnext", "alexnet", "vgg", "densenet", "efficientnet", "regnet",
                     "mobilenet", "convnext", "googlenet", "inception", "mnasnet", "shufflenet", "squeezenet")


def _is_convnet(arch: str) -> bool:
    from ._timm_filter import timm_module
    module = timm_module(arch)
    return module in _CONVNET_MODULES if module else split_arch(arch)[1].lower().startswith(_CONVNET_PREFIXES)


def _check_arch_kind(arch: str, kind: str | None, guess, source: str) -> None:
    """A ViT file with --arch resnet50 (or the reverse) would fail deep inside model building or loading; say
    what the file holds instead."""
    if kind is None:
        return
    name = split_arch(arch)[1].lower()
    crossed = name.startswith(_TRANSFORMER_PREFIXES) if kind == "resnet" else \
        kind in ("vit", "dinov2", "beit") and _is_convnet(arch)
    if not crossed:
        return
    hint = guess.arch if isinstance(guess, ArchGuess) and guess.arch else None
    raise CheckpointError(f"{source}: the weights are a {'ResNet' if kind == 'resnet' else kind.upper()} but "
                          f"--arch {arch} is not; " + (f"pass --arch {hint} or leave --arch out" if hint else
                                                       "pass the architecture the file was trained with"))


def _other_family(arch: str, guess) -> bool:
    """--arch is a timm model of another module than the one the keys were recognised as (a file the kind-specific
    path would build with the wrong arguments)."""
    from ._timm_filter import timm_module
    if not isinstance(guess, ArchGuess) or not guess.arch:
        return False
    mine, theirs = timm_module(arch), timm_module(guess.arch)
    return mine is not None and theirs is not None and mine != theirs


def fit_resolution(plan: ModelPlan, model: nn.Module, rule: str | None = None) -> None:
    """Resize position embeddings / relative-position tables when the model's grid differs from the file's;
    a ViT's grid with its family's rule (pos_embed.py), timm's when there is none."""
    sd = plan.state_dict
    if plan.kind == "beit":
        from timm.models.beit import checkpoint_filter_fn
        before = {k: tuple(v.shape) for k, v in sd.items()}
        plan.state_dict = checkpoint_filter_fn(sd, model)
        changed = [k for k, v in plan.state_dict.items() if before.get(k) != tuple(v.shape)]
        if changed:
            plan.notes.append(f"resized to the model's window with timm's BEiT filter: {', '.join(changed[:3])}")
        return
    pos = sd.get("pos_embed")
    target = getattr(model, "pos_embed", None)
    if pos is None or not isinstance(target, torch.Tensor) or pos.shape == target.shape:
        return
    n_prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    if pos.shape[-1] != target.shape[-1]:
        return  # a width mismatch is reported by load_strict as a shape mismatch
    side = math.isqrt(pos.shape[1] - n_prefix)
    if side * side != pos.shape[1] - n_prefix:
        return  # not a square grid: load_strict reports the shape mismatch
    from .pos_embed import resample_patch_grid
    sd["pos_embed"] = resample_patch_grid(pos, n_prefix, (side, side), tuple(model.patch_embed.grid_size),
                                          rule or "timm")
    plan.notes.append(f"pos_embed resampled {pos.shape[1] - n_prefix} → {target.shape[1] - n_prefix} patch tokens "
                      f"({rule or 'timm'} rule)")


def counted(keys) -> list[str]:
    # BatchNorm's step counter carries no weight information; files differ on whether they store it.
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], report, allow_partial: bool) -> None:
    """Load `sd` into `model`; anything short of every backbone tensor, each with its shape, is an error."""
    expected = model.state_dict()
    mismatched = [f"{k} (file {tuple(sd[k].shape)} vs model {tuple(v.shape)})"
                  for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if mismatched:
        raise CheckpointError(f"{report.source}: shape mismatch for {len(mismatched)} tensors, e.g. {mismatched[0]}; "
                              f"the file does not hold a {report.arch} (pass the right --arch, or none to infer it)")
    report.missing = counted(k for k in expected if k not in sd)
    report.unexpected = sorted(k for k in sd if k not in expected)
    n_expected = len(counted(expected))
    report.n_expected, report.n_loaded = n_expected, n_expected - len(report.missing)
    report.coverage = report.n_loaded / max(n_expected, 1)
    if report.unexpected and not allow_partial:
        raise CheckpointError(
            f"{report.source}: {len(report.unexpected)} backbone tensors have no place in {report.arch} "
            f"(e.g. {report.unexpected[0]}); wrong --arch? (--allow-partial ignores them)")
    if report.missing and not allow_partial:
        raise CheckpointError(
            f"{report.source}: only {report.coverage:.1%} of {report.arch} loaded; missing {len(report.missing)} "
            f"tensors, e.g. {', '.join(report.missing[:3])}; pass the right --arch or --allow-partial")
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)
