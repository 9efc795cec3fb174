"""Checkpoint layouts: how a published file stores its backbone, and how to map it onto a timm/torchvision model.

Each layout is a small matcher/converter pair, tried in order of registration; the first match wins.
A layout never builds a model and never reads a file: it turns a loaded object into a backbone state dict
and says which groups (heads, projectors, ...) it dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .._registry import Registry
from ..errors import CheckpointError

__all__ = ["Layout", "Converted", "LAYOUTS", "register_layout", "detect_layout", "strip_prefix", "tensors_only"]

HEAD_PREFIXES = ("fc.", "head.", "heads.", "classifier.", "head_dist.")


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]
    family: str
    dropped: dict[str, list[str]] = field(default_factory=dict)   # group name → original keys
    arch: str | None = None                                          # inferred architecture, if the layout knows
    model_kwargs: dict[str, Any] = field(default_factory=dict)       # e.g. global_pool='avg' for MAE fine-tuned
    preprocessing: dict[str, Any] = field(default_factory=dict)      # overrides of mean/std/interpolation
    feature_mode: str | None = None                                   # the feature the family's paper read
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], dict], Converted]


LAYOUTS: Registry[Layout] = Registry("checkpoint layout")
_ORDER: list[str] = []


def register_layout(name: str):
    def deco(pair: tuple[Callable, Callable]):
        matches, convert = pair
        LAYOUTS.register(name, Layout(name, matches, convert))
        _ORDER.append(name)
        return pair
    return deco


def tensors_only(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def _unwrap_plain(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("model", "state_dict"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def _plain_matches(obj: Mapping[str, Any]) -> bool:
    return bool(tensors_only(_unwrap_plain(obj)))


def _plain_convert(obj: Mapping[str, Any], opts: dict) -> Converted:
    sd = tensors_only(_unwrap_plain(obj))
    if sd and all(k.startswith("module.") for k in sd):
        sd = strip_prefix(sd, "module.")
    head = [k for k in sd if k.startswith(HEAD_PREFIXES)]
    return Converted({k: v for k, v in sd.items() if k not in head}, family="plain",
                     dropped={"classifier head": head} if head else {})


register_layout("plain")((_plain_matches, _plain_convert))


def detect_layout(obj: Any, source: str) -> Layout:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    for name in _ORDER:
        layout = LAYOUTS.get(name)
        if layout.matches(obj):
            return layout
    raise CheckpointError(f"{source}: unknown checkpoint layout (top-level keys: {sorted(obj)[:8]}); "
                          f"see `bench inspect {source}` and docs for the supported layouts")
