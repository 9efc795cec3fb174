"""Checkpoint layouts: where a published file keeps its backbone, and what else it carries.

Each layout is a small matcher/converter pair (style guide §2.3). `detect_layout` tries EVERY layout in the fixed
order below and raises if two match: the matchers are written to exclude each other (a prefix such as
`module.encoder_q.` only matches one of them, and single-backbone layouts refuse containers that hold several
models: `teacher`/`student`, `model`/`model_ema`). A layout never builds a model and never reads a file: it
returns the backbone state dict with timm/torchvision key names, the family its keys reveal, and the groups it
dropped (heads, projectors, predictors, momentum encoders, queues, decoders, prototypes), listed by key.

The layouts themselves live in `_ssl_layouts.py`; this module is the framework plus the shared helpers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .._registry import Registry
from ..errors import CheckpointError

__all__ = ["Layout", "Converted", "LAYOUTS", "register_layout", "detect_layout", "list_layouts", "strip_prefix",
           "tensors_only", "single_backbone", "split_groups", "MULTI_MODEL_KEYS"]

# Containers holding more than one model: a single-backbone layout must not pick one of them silently.
MULTI_MODEL_KEYS = ("teacher", "student", "model_ema")


@dataclass
class Converted:
    state_dict: dict[str, torch.Tensor]
    family: str
    dropped: dict[str, list[str]] = field(default_factory=dict)   # group name → original keys
    ckpt_key: str | None = None                                      # the sub-model it read (teacher, model, ...)
    notes: list[str] = field(default_factory=list)
    # arguments the file's own structure fixes whatever --arch names (a Swin's window read from its tables)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], dict], Converted]
    doc: str = ""
    selects_key: bool = False     # the layout itself chooses among sub-models with --ckpt-key


LAYOUTS: Registry[Layout] = Registry("checkpoint layout")
_ORDER: list[str] = []


def register_layout(name: str, doc: str = "", selects_key: bool = False):
    """Decorator for a `(matches, convert)` pair; registration order is the documented detection order."""
    def deco(pair: tuple[Callable, Callable]):
        matches, convert = pair
        LAYOUTS.register(name, Layout(name, matches, convert, doc, selects_key))
        _ORDER.append(name)
        return pair
    return deco


def list_layouts() -> list[Layout]:
    from . import _ssl_layouts  # noqa: F401  (registers the layouts)
    return [LAYOUTS.get(n) for n in _ORDER]


def tensors_only(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}


def single_backbone(obj: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
    """The tensor dict of a one-model file: bare, or under `model` / `state_dict` / `module` (DeepSpeed).

    None for multi-model containers (teacher/student, model/model_ema), which have their own layouts.
    """
    if any(k in obj for k in MULTI_MODEL_KEYS):
        return None
    if tensors_only(obj):
        return tensors_only(obj)
    for key in ("model", "state_dict", "module"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and tensors_only(inner):
            return tensors_only(inner)
    return None


def split_groups(sd: Mapping[str, torch.Tensor], groups: Mapping[str, tuple[str, ...]]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Remove keys starting with any of a group's prefixes (or equal to them); returns (kept, dropped by group)."""
    kept, dropped = dict(sd), {}
    for group, prefixes in groups.items():
        hit = sorted(k for k in kept if any(k == p.rstrip(".") or k.startswith(p) for p in prefixes))
        if hit:
            dropped[group] = hit
            for k in hit:
                del kept[k]
    return kept, dropped


def detect_layout(obj: Any, source: str, allow_unknown: bool = False) -> Layout | None:
    """The one layout that matches `obj`; an error if several do (never a silent first match) or if none does,
    unless `allow_unknown` (an `--arch` was given: its own timm checkpoint filter maps the keys), then None."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict; save model.state_dict()")
    hits = [layout for layout in list_layouts() if layout.matches(obj)]
    if len(hits) > 1:
        raise CheckpointError(f"{source}: matches several checkpoint layouts ({', '.join(h.name for h in hits)}); "
                              f"pass --ckpt-key to pick the sub-model, or convert the file to a plain state dict")
    if not hits and allow_unknown:
        return None
    if not hits:
        raise CheckpointError(
            f"{source}: unknown checkpoint layout (top-level keys: {sorted(map(str, obj))[:8]}); if it holds a "
            f"timm/torchvision model (its state_dict(), or an original Swin/ConvNeXt/PVT v2/EVA/XCiT/DeiT/RegNet "
            f"release that timm converts) pass --arch NAME; see `bench inspect {source} --arch NAME` and "
            f"docs/checkpoints.md for the recognised layouts")
    return hits[0]
