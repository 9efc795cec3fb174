"""Build an architecture by name from timm (preferred) or torchvision, without its classifier."""
from __future__ import annotations

import torch.nn as nn

from ..errors import CheckpointError

__all__ = ["create_model", "split_arch"]

_PREFIXES = {"timm": "timm", "tv": "torchvision", "torchvision": "torchvision"}


def split_arch(arch: str) -> tuple[str | None, str]:
    """'timm:vit_small_patch16_224' → ('timm', 'vit_small_patch16_224'); a bare name → (None, name)."""
    for sep in (":", "/"):
        head, _, tail = arch.partition(sep)
        if tail and head in _PREFIXES:
            return _PREFIXES[head], tail
    return None, arch


def _strip_last_linear(model: nn.Module) -> nn.Module:
    # torchvision has no num_classes=0: the classifier is always the last Linear in module order.
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    if last is None:
        return model
    parent_name, _, child = last.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model


def _cifar_stem(model: nn.Module, padding: int | None) -> nn.Module:
    """The CIFAR ResNet of solo-learn and its kin: conv1 3×3 stride 1 (padding as trained), no max-pool."""
    if padding is not None:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=padding, bias=False)
        model.maxpool = nn.Identity()
    return model


def create_model(arch: str, **kwargs) -> tuple[nn.Module, str]:
    """Random-weight backbone with no classifier. Returns (model, library)."""
    cifar = kwargs.pop("cifar_stem", None)
    model, library = _create_model(arch, **kwargs)
    return _cifar_stem(model, cifar), library


def _create_model(arch: str, **kwargs) -> tuple[nn.Module, str]:
    import timm
    import torchvision

    library, name = split_arch(arch)
    from ._deepcluster import DEEPCLUSTER_ARCHS, build_deepcluster
    if library is None and name in DEEPCLUSTER_ARCHS:   # not in timm/torchvision: DeepCluster's own layers
        return build_deepcluster(name, **kwargs), "bench"
    if library in (None, "timm") and timm.is_model(name):
        try:
            # ViTs take any input size (pos-embed interpolated), so 64-px miniatures and --resolution work;
            # architectures without the option raise TypeError and are built as they are
            return timm.create_model(name, pretrained=False, num_classes=0,
                                     **{"dynamic_img_size": True, **kwargs}), "timm"
        except TypeError:
            pass
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs), "timm"
        except TypeError as e:
            raise CheckpointError(f"timm could not build {name!r} with {kwargs}: {e}") from e
    if library in (None, "torchvision") and name in torchvision.models.list_models():
        if kwargs:
            raise CheckpointError(f"torchvision architecture {name!r} takes no extra arguments (got {kwargs})")
        return _strip_last_linear(torchvision.models.get_model(name, weights=None)), "torchvision"
    raise CheckpointError(
        f"unknown architecture {arch!r}: not a timm or torchvision model name "
        f"(see `python -c 'import timm; print(timm.list_models(\"*{name[:6]}*\"))'`)")
