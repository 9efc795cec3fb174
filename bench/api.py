"""`bench.evaluate`: the command line's `bench run` as one Python call, for notebooks and scripts.

    import bench
    rec = bench.evaluate("mocov2_800ep", "linear", preset="mocov2", data_root="/data")
    rec["metrics"]["top1"]

The same record (and file under `out/runs/`) as `bench run`; nothing here that the CLI does not also do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["evaluate"]


def _backbone(source: Any, seed: int):
    """A Backbone as it is, a feature folder (→ None), or a name: checkpoint path / checkpoints.yaml name first,
    then a timm/torchvision architecture (random weights, or published ones for a pretrained tag / hf-hub id)."""
    from .backbones import Backbone, load_backbone
    from .backbones.zoo import get_entry
    if isinstance(source, Backbone):
        return source
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        if Path(text).is_dir():
            return None
        if Path(text).is_file() or get_entry(text) is not None or os.path.sep in text:
            return load_backbone(text, seed=seed)
        return load_backbone(None, text, seed=seed)
    raise TypeError(f"evaluate() takes a Backbone, a checkpoint path or name, an architecture name or a feature "
                    f"folder, not {type(source).__name__}")


def _protocol_options(spec, options: dict[str, Any]) -> dict[str, Any]:
    """Keyword options through the protocol's own argparse flags, so types and choices are checked as on the CLI."""
    import argparse
    import contextlib
    import io
    from .errors import BenchError
    p = argparse.ArgumentParser(prog=f"evaluate(protocol={spec.name!r})", add_help=False)
    spec.add_arguments(p)
    flags = {a.dest: a for a in p._actions}
    argv = []
    for key, value in options.items():
        if key not in flags:
            raise BenchError(f"evaluate(): {spec.name} has no option {key!r}; it takes {sorted(flags)}")
        flag = flags[key].option_strings[-1]
        if isinstance(value, bool):
            argv += [flag] if value else []
        else:
            argv += [flag, *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = p.parse_args(argv)
    except SystemExit:
        raise BenchError(f"evaluate(): {err.getvalue().strip().splitlines()[-1].split(' error: ', 1)[-1]}") from None
    return spec.options(parsed) if spec.options else vars(parsed)


def evaluate(backbone_or_features: Any, protocol: str, preset: str | None = None, *, dataset: str | None = None,
             data_root: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
             quick: bool = False, out: str | os.PathLike | None = None, force: bool = False, device: str = "auto",
             batch_size: int = 64, workers: int | None = None, resolution: int | None = None,
             feature_mode: str | None = None, cache_dir: str | os.PathLike | None = None, seed: int = 0,
             seeds: int = 1, **options: Any) -> dict[str, Any]:
    """Run `protocol` (with `preset`, default the file's default) and return its record.

    Args:
        backbone_or_features: a `bench.Backbone` (from `bench.load_backbone`), a checkpoint file or
            checkpoints.yaml name, a timm/torchvision architecture (`"resnet50"` random, `"vit_small_patch14_dinov2.
            lvd142m"` published weights), or a folder of `<split>.npz` features.
        data_root: the datasets' folder (default $BENCH_DATA, else the miniatures, generated on first use).
        overrides: preset fields to change, as `--set KEY=VALUE` does (the record is then not comparable).
        seeds: `--seeds N` (training protocols): N seeds in one record, mean ± std (bench.seeds).
        options: the protocol's own flags by their option name (`labels_percent=1` for semisup, as the CLI's
            `--labels-percent 1`).
    """
    from . import distributed as dd
    from .commands._common import device_from_arg
    from .data import cache_dir as default_cache, resolve_data_root
    from .errors import BenchError
    from .protocols import get_protocol
    from .runner import RunContext, run_protocol
    spec = get_protocol(protocol)
    backbone = _backbone(backbone_or_features, seed)
    features = Path(backbone_or_features) if backbone is None else None
    dev = dd.local_device(device_from_arg(device))
    if spec.add_arguments:
        options = _protocol_options(spec, options)
    elif options:
        raise BenchError(f"evaluate(): protocol {protocol} takes no options, got {sorted(options)}")
    ctx = RunContext(dataset=dataset or spec.default_dataset,
                     data_root=resolve_data_root(data_root) if features is None or data_root else None,
                     backbone=backbone, features_dir=features, feature_mode=feature_mode, resolution=resolution,
                     device=dev, batch_size=batch_size,
                     workers=workers if workers is not None else (min(8, os.cpu_count() or 1)
                                                                 if dev.type == "cuda" else 0),
                     cache_dir=Path(cache_dir or default_cache()), seed=seed, quick=quick, options=options,
                     seeds=seeds)
    if out is None:
        from ._results_dir import default_results
        out = default_results()
    record, _, _ = run_protocol(protocol, ctx, preset=preset, overrides=overrides, out_dir=out, force=force)
    return record
