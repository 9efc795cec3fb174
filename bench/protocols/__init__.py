"""Protocol registry. A protocol gets a RunContext (features or a backbone, data) and a preset, returns numbers.

It never opens a checkpoint, never writes a record and never formats a table: `bench.runner` does those.

Layout (one shape for every protocol, as DINOv2's eval/): `bench/protocols/<name>.py` is protocol `<name>`, a
file to read top to bottom (preset, options, `@register_protocol("<name>")` run function); its machinery (models,
training loops, evaluators) lives in private modules `_<name>_*.py` beside it; helpers several protocols share
live in `_common.py`, and a protocol built on another one's machinery imports that protocol's modules
(coco_detection and voc_transfer train through `_detection_*`, transfer and semisup fit with `logreg`). Every
public module here registers the protocol it is named after, every private one starts with `_`, there are no
sub-packages, and no protocol code lives outside this package (tests/test_cli.py::test_protocol_package_layout).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import pkgutil
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

from .._registry import Registry

__all__ = ["ProtocolSpec", "ProtocolResult", "PROTOCOLS", "register_protocol", "get_protocol", "list_protocols",
           "protocol_summaries"]


@dataclass
class ProtocolResult:
    metrics: dict[str, float]                          # percent, flat: {"top1": 74.5, "top1_k10": ...}
    details: dict[str, Any] = field(default_factory=dict)   # chosen hyperparameters, curves, per-class numbers
    headline: tuple[str, ...] = ()                     # metrics to print first
    # per-sample statistics of metrics (bench.metrics.bootstrap.Samples) → the record's bootstrap intervals
    samples: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] | None = None                # several seeds: bench.seeds.seeds_block


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    run: Callable[..., ProtocolResult]
    preset_cls: type
    default_dataset: str = "imagenet"
    accepts_features: bool = True                      # can run from `--features DIR` without a backbone
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    options: Callable[[argparse.Namespace], dict[str, Any]] | None = None   # CLI args → ctx.options
    description: str = ""


PROTOCOLS: Registry[ProtocolSpec] = Registry("protocol")



def register_protocol(name: str, *, preset_cls: type, **kwargs):
    def deco(fn: Callable[..., ProtocolResult]):
        PROTOCOLS.register(name, ProtocolSpec(name=name, run=fn, preset_cls=preset_cls,
                                              description=(fn.__doc__ or "").strip().split("\n")[0], **kwargs))
        return fn
    return deco


def _import_all() -> None:
    # Every public module of this package is a protocol that registers itself; imported on first use so
    # `bench --help` stays fast.
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_protocol(name: str) -> ProtocolSpec:
    _import_all()
    return PROTOCOLS.get(name)


def list_protocols(pattern: str = "*") -> list[str]:
    _import_all()
    return PROTOCOLS.names(pattern)


def protocol_summaries() -> dict[str, str]:
    """{name: one-line description} of every protocol, read from the modules' source without importing them.

    `bench list protocols` answers from this: importing the protocols pulls in torch, torchvision and timm
    (seconds), while reading their decorators and docstrings takes milliseconds. A test checks it agrees with
    the imported registry.
    """
    out: dict[str, str] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        base = Path(__path__[0]) / info.name
        src = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
        for node in ast.walk(ast.parse(src.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register_protocol"
                        and deco.args and isinstance(deco.args[0], ast.Constant)):
                    out[deco.args[0].value] = (ast.get_docstring(node) or "").strip().split("\n")[0]
    return dict(sorted(out.items()))
