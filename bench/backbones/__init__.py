"""load_backbone(): safe read → recognise the layout → map keys → timm/torchvision model + a load report.

A partial or mismatched load is an error, never a warning: numbers from half-loaded weights look plausible.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._io import sha256_file
from ..errors import CheckpointError
from ._build import create_model
from ._safe_load import read_checkpoint
from .features import compute_features, default_feature_mode, is_vit
from .layouts import Converted, detect_layout

__all__ = ["Backbone", "LoadReport", "Preprocessing", "load_backbone", "DEFAULT_ARCH"]

DEFAULT_ARCH = "resnet18"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be normalised for this backbone (timm's data config, overridden by the family)."""
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"


@dataclass
class LoadReport:
    source: str
    arch: str
    library: str
    family: str
    layout: str | None = None
    sha256: str | None = None
    ckpt_key: str | None = None
    coverage: float = 1.0                 # fraction of the backbone's tensors that came from the file
    n_loaded: int = 0
    n_expected: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    extra_objects: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    feature_mode: str = "pool"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backbone:
    model: nn.Module
    report: LoadReport
    preprocessing: Preprocessing
    weights_id: str   # hash of what determines the weights; part of every feature cache key

    @property
    def feature_mode(self) -> str:
        return self.report.feature_mode

    def features(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        return compute_features(self.model, x, mode or self.feature_mode)


def _model_preprocessing(model: nn.Module, overrides: dict[str, Any]) -> Preprocessing:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    base = Preprocessing(mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
                         interpolation=cfg.get("interpolation", "bicubic" if is_vit(model) else "bilinear"))
    return Preprocessing(**{**asdict(base), **overrides})


def _state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _counted(keys) -> list[str]:
    # BatchNorm's step counter carries no weight information; files differ on whether they store it.
    return [k for k in keys if not k.endswith("num_batches_tracked")]


def _load_into(model: nn.Module, conv: Converted, report: LoadReport, allow_partial: bool) -> None:
    expected = model.state_dict()
    sd = conv.state_dict
    mismatched = [f"{k} (file {tuple(sd[k].shape)} vs model {tuple(v.shape)})"
                  for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if mismatched:
        raise CheckpointError(f"{report.source}: shape mismatch for {len(mismatched)} tensors, e.g. {mismatched[0]}; "
                              f"the file does not hold a {report.arch} (pass the right --arch)")
    report.missing = _counted(k for k in expected if k not in sd)
    report.unexpected = sorted(k for k in sd if k not in expected)
    counted = _counted(expected)
    report.n_expected = len(counted)
    report.n_loaded = report.n_expected - len(report.missing)
    report.coverage = report.n_loaded / max(report.n_expected, 1)
    if report.unexpected and not allow_partial:
        raise CheckpointError(
            f"{report.source}: {len(report.unexpected)} backbone tensors have no place in {report.arch} "
            f"(e.g. {report.unexpected[0]}); wrong --arch? (--allow-partial ignores them)")
    if report.missing and not allow_partial:
        raise CheckpointError(
            f"{report.source}: only {report.coverage:.1%} of {report.arch} loaded; missing {len(report.missing)} "
            f"tensors, e.g. {', '.join(report.missing[:3])}; pass the right --arch or --allow-partial")
    model.load_state_dict({k: v for k, v in sd.items() if k in expected}, strict=False)


def _is_path(source: str) -> bool:
    return os.path.sep in source or Path(source).suffix in {".pth", ".pt", ".bin", ".tar", ".ckpt", ".safetensors",
                                                            ".pkl", ".torch"} or Path(source).exists()


def load_backbone(source: str | os.PathLike | None = None, arch: str | None = None, *, ckpt_key: str | None = None,
                  allow_partial: bool = False, trust_checkpoint: bool = False, seed: int = 0) -> Backbone:
    """Build a backbone with its weights and a report of how it was loaded.

    Args:
        source: a checkpoint path, or None for random weights (the papers' "random" rows).
        arch: timm/torchvision architecture name ("resnet50", "vit_small_patch16_224", "tv:resnet50").
        ckpt_key: which sub-dict to read when a file holds several (e.g. DINO "teacher" / "student").
        allow_partial: load even if some backbone tensors are missing or unexpected (recorded in the report).
        trust_checkpoint: allow full unpickling; only for files from a source you trust.
        seed: seeds random initialisation, so a "random" backbone is reproducible.
    """
    if source is None:
        arch = arch or DEFAULT_ARCH
        torch.manual_seed(seed)
        model, library = create_model(arch)
        report = LoadReport(source="random", arch=arch, library=library, family="random", coverage=0.0,
                            feature_mode=default_feature_mode(model), notes=[f"random init, seed {seed}"])
        pre = _model_preprocessing(model, {})
        report.preprocessing = asdict(pre)
        return Backbone(model.eval(), report, pre, weights_id=f"random:{_state_digest(model)}")

    source = str(source)
    if not _is_path(source):
        raise CheckpointError(f"{source}: no such checkpoint file; give a path to a .pth/.safetensors file")
    obj = read_checkpoint(source, trust=trust_checkpoint)
    sha = sha256_file(source)
    if ckpt_key is not None:
        if not isinstance(obj, dict) or ckpt_key not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else []
            raise CheckpointError(f"{source}: no key {ckpt_key!r} in the checkpoint (top-level keys: {keys[:8]})")
        obj = obj[ckpt_key]
    layout = detect_layout(obj, source)
    conv = layout.convert(obj, {"ckpt_key": ckpt_key})
    arch = arch or conv.arch
    if arch is None:
        raise CheckpointError(f"{source}: cannot tell the architecture from a {layout.name} checkpoint; pass --arch")
    torch.manual_seed(seed)
    model, library = create_model(arch, **conv.model_kwargs)
    report = LoadReport(source=source, arch=arch, library=library, family=conv.family, layout=layout.name,
                        sha256=sha, ckpt_key=ckpt_key, dropped={g: len(k) for g, k in conv.dropped.items()},
                        extra_objects=sorted(k for k, v in obj.items() if not isinstance(v, (torch.Tensor, dict))),
                        feature_mode=conv.feature_mode or default_feature_mode(model), notes=list(conv.notes))
    _load_into(model, conv, report, allow_partial)
    pre = _model_preprocessing(model, conv.preprocessing)
    report.preprocessing = asdict(pre)
    weights_id = f"file:{sha}:{ckpt_key}:{arch}:{layout.name}"
    if report.missing:  # random tensors remain: their values depend on the seed
        weights_id += f":partial-seed{seed}"
    return Backbone(model.eval(), report, pre, weights_id=weights_id)
