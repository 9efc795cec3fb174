"""`--arch NAME` for any architecture timm or torchvision builds: the file's keys go through the key mapping timm
itself applies to that model's pretrained weights (`pretrained_filter_fn`, each family's `checkpoint_filter_fn`:
original Swin, ConvNeXt, PVT v2, BEiT, EVA, XCiT, DeiT, pycls RegNet releases → timm names), the classifier the
file carries is dropped, and the strict coverage check of `_assemble.load_strict` does the rest.

The filter is the one timm's own model builder receives for this exact variant: it is read while the model is
built (the module's `build_model_with_cfg` is watched for the duration), so there is no table here to go stale.
"""
from __future__ import annotations

import importlib
import inspect
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn as nn

from ..errors import CheckpointError
from ._build import split_arch

__all__ = ["capture_filter", "timm_module", "apply_arch_filter", "classifier_names", "by_arch"]


def timm_module(arch: str) -> str | None:
    """timm's module of an architecture name ("convnext_atto" → "convnext"), None for torchvision / unknown."""
    library, name = split_arch(arch)
    if library == "torchvision":
        return None
    from timm.models import _registry
    return _registry._model_to_module.get(name.split(".")[0])


@contextmanager
def capture_filter(arch: str) -> Iterator[dict[str, Any]]:
    """While timm builds `arch` inside the block, note the `pretrained_filter_fn` its module passes to
    `build_model_with_cfg` (None: timm loads that model's weights unmapped)."""
    box: dict[str, Any] = {"fn": None, "module": timm_module(arch)}
    module = importlib.import_module(f"timm.models.{box['module']}") if box["module"] else None
    real = getattr(module, "build_model_with_cfg", None)
    if real is None:
        yield box
        return

    def spy(*args, **kwargs):
        box["fn"] = kwargs.get("pretrained_filter_fn")
        return real(*args, **kwargs)
    module.build_model_with_cfg = spy
    try:
        yield box
    finally:
        module.build_model_with_cfg = real


def classifier_names(model: nn.Module, library: str) -> tuple[str, ...]:
    """Module names of the classifier(s) the headless model replaced by Identity: timm's pretrained_cfg says which
    (`head.fc`, `classifier`, (`head`, `head_dist`)); torchvision's last Linear became an Identity."""
    if library == "timm":
        names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
        return (names,) if isinstance(names, str) else tuple(names)
    return tuple(n for n, m in model.named_modules() if n and isinstance(m, nn.Identity))


def _in_classifier(key: str, heads: tuple[str, ...], model: nn.Module) -> bool:
    """`key` belongs to a classifier, or to the Identity that replaced the classifier's parent (EfficientViT-M's
    `head` = BN + Linear, classifier `head.l`, becomes one Identity without classes)."""
    for head in heads:
        if key.startswith(head + "."):
            return True
        parts = head.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            try:
                replaced = isinstance(model.get_submodule(parent), nn.Identity)
            except AttributeError:
                replaced = False
            if replaced and key.startswith(parent + "."):
                return True
    return False


def apply_arch_filter(sd: dict[str, torch.Tensor], model: nn.Module, library: str, arch: str,
                      fn: Callable | None, module: str | None) -> tuple[dict[str, torch.Tensor], dict, list[str]]:
    """(mapped state dict, dropped groups, notes): timm's filter, then the file's classifier set aside."""
    notes: list[str] = []
    if fn is not None:
        try:
            takes_model = len(inspect.signature(fn).parameters) > 1   # regnet's _filter_fn(state_dict)
            mapped = fn(dict(sd), model) if takes_model else fn(dict(sd))
        except Exception as e:   # the filter assumes its own family's keys; anything else breaks inside it
            raise CheckpointError(f"timm's timm.models.{module}.{getattr(fn, '__name__', 'filter')} could not map "
                                  f"the file's keys ({type(e).__name__}: {e}); does it hold a {arch}?") from None
        renamed = sum(1 for k in mapped if k not in sd)
        reshaped = sum(1 for k, v in mapped.items() if k in sd and sd[k].shape != v.shape)
        notes.append(f"keys mapped by timm's timm.models.{module}.{getattr(fn, '__name__', 'filter')} "
                     f"({len(sd)} keys in, {len(mapped)} out; {renamed} renamed, {reshaped} reshaped)")
        sd = dict(mapped)
    expected = model.state_dict()
    heads = classifier_names(model, library)
    head_keys = sorted(k for k in sd if k not in expected and _in_classifier(k, heads, model))
    dropped = {"classifier head": head_keys} if head_keys else {}
    return {k: v for k, v in sd.items() if k not in head_keys}, dropped, notes


def by_arch(obj: Any, source: str, arch: str) -> "Converted":
    """A file of no recognised layout, given `--arch`: its tensor dict (bare, or under model/state_dict/module;
    `module.` stripped) is taken to be that architecture's, to be mapped by timm's filter and loaded strictly."""
    from .layouts import Converted, single_backbone, strip_prefix
    sd = single_backbone(obj) if isinstance(obj, Mapping) else None
    if not sd:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else []
        raise CheckpointError(f"{source}: unknown checkpoint layout (top-level keys: {keys}) and no tensor dict "
                              f"(bare or under model/state_dict/module) to load into --arch {arch}; pass --ckpt-key "
                              f"with the entry that holds the weights")
    notes = []
    if all(k.startswith("module.") for k in sd):
        sd, notes = strip_prefix(sd, "module."), ["`module.` (DistributedDataParallel) prefix stripped"]
    return Converted(sd, "timm-arch", notes=notes)
