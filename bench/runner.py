"""run_protocol(): features or backbone + data + preset → protocol → record. The only place records are built.

RunContext is what a protocol sees: `ctx.features(split, transform)` returns cached features whether they come
from a backbone or from `--features DIR`, and notes every input it handed out, so the record and its
fingerprint describe exactly what produced the number.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed as dd
from ._io import sha256_file
from .backbones import Backbone
from .backbones.features import FEATURE_MODES
from .cache import FeatureSet, extract_features, load_feature_split
from .data import DATASETS, DataRoot, TransformSpec, build_eval_transform, open_dataset
from .errors import BenchError
from .precision import Precision, amp_arg, amp_key, resolve_precision
from .presets import preset_settings, preset_version, resolve_preset
from .protocols import ProtocolResult, get_protocol
from .records import environment, fingerprint, read_record, record_path, run_id, stable_inputs, write_record
from .seeds import check_seeds, run_seeds
from .train import seed_everything
from .uncertainty import uncertainty_block

__all__ = ["RunContext", "run_protocol", "MINI_RESOLUTION"]

_logger = logging.getLogger(__name__)

# Miniatures are 32-px images; evaluating them at 224 px would cost 12× the compute for no information.
MINI_RESOLUTION = 64


def _features_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise BenchError(f"{path}: unreadable meta.json ({e}); fix or delete it") from None
    return meta if isinstance(meta, dict) else {}


@dataclass
class RunContext:
    dataset: str
    data_root: DataRoot | None = None
    backbone: Backbone | None = None
    features_dir: Path | None = None
    feature_mode: str | None = None          # --feature-mode; beats the preset's and the backbone's
    resolution: int | None = None            # --resolution; None = the preset's (MINI_RESOLUTION on miniatures)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64
    workers: int = 0
    cache_dir: Path | None = None
    quick: bool = False
    seed: int = 0
    seeds: int = 1                           # --seeds N: seeds seed … seed+N-1 in one record (bench.seeds)
    amp: str | bool = "auto"                 # --amp: auto, off, bf16, fp16 (bench.precision); True means bf16
    options: dict[str, Any] = field(default_factory=dict)   # protocol-specific CLI options (recorded)
    skip_bad_images: bool = False            # --skip-bad-images: training loaders drop unreadable images (counted)
    skip_log: Path | None = None             # where SkipBadImages lists them (set by run_protocol)
    class_notes: dict[str, str] = field(default_factory=dict)   # e.g. a val/ holding a subset of train/'s classes
    ckpt_meta: dict[str, Any] = field(default_factory=dict)     # --ckpt-meta: pre-training setting (overrides yaml)
    inputs: dict[str, Any] = field(default_factory=dict)    # filled while running: what each split was
    precision_used: dict[str, str] = field(default_factory=dict)   # filled while running: part -> dtype it ran in

    def __post_init__(self):
        self.amp = amp_arg(self.amp)

    def precision(self, part: str, reference: str | None = None) -> Precision:
        """The autocast dtype of one part of the run (`extraction`, `train`, ...) from --amp and the dtype the
        protocol's reference code used on a GPU; noted for the record."""
        prec = resolve_precision(self.amp, self.device, reference)
        self.precision_used[part] = prec.name
        return prec

    @property
    def mini(self) -> bool:
        """Miniature data, however it arrived: the data root's marker, or a `--features` folder whose meta.json
        (written by `bench extract`) says its features came from the miniatures."""
        if self.data_root and self.data_root.mini:
            return True
        return bool(self.features_dir and _features_meta(self.features_dir).get("mini") is True)

    def require_backbone(self, why: str) -> Backbone:
        if self.backbone is None:
            raise BenchError(f"{why} needs a backbone (--model/--ckpt), not --features")
        return self.backbone

    def resolve_feature_mode(self, preset_mode: str | None) -> str:
        mode = self.feature_mode or preset_mode or self.require_backbone("feature extraction").feature_mode
        FEATURE_MODES.get(mode)
        return mode

    def transform_spec(self, preset_transform: dict[str, Any]) -> TransformSpec:
        """Preset resize/crop/interpolation + the backbone's normalisation, at the run's resolution."""
        unknown = set(preset_transform) - {"resize", "crop", "interpolation", "mean", "std", "centre_fraction",
                                           "centre_rounding"}
        if unknown:
            raise BenchError(f"unknown transform key(s) {sorted(unknown)}")
        pre = self.require_backbone("image transforms").preprocessing
        # a centre-fraction crop replaces resize-then-crop, so the dataclass's default resize must not apply
        base = {"resize": None} if preset_transform.get("centre_fraction") is not None else {}
        try:
            spec = TransformSpec(**{"mean": pre.mean, "std": pre.std, **base, **preset_transform})
        except ValueError as e:
            raise BenchError(f"transform {preset_transform}: {e}") from e
        resolution = self.resolution or (MINI_RESOLUTION if self.mini else None)
        return spec.at_resolution(resolution) if resolution else spec

    def open_images(self, split: str, transform, dataset: str | None = None):
        """The image dataset for `split` with `transform` applied (for protocols that train on images)."""
        if self.data_root is None:
            raise BenchError("this protocol needs images; give --data-root (or no --features)")
        ds = open_dataset(dataset or self.dataset, self.data_root.path, split, transform, mini=self.mini)
        if note := getattr(ds, "class_note", None):
            self.class_notes[f"{dataset or self.dataset}/{split}"] = note
        return ds

    def loader_dataset(self, ds) -> tuple[Any, dict[str, Any]]:
        """(dataset, DataLoader kwargs) for a training/eval loader: with --skip-bad-images, unreadable images are
        dropped from their batch and listed for the record; otherwise the dataset as is (a bad image is an error
        naming its file)."""
        if not self.skip_bad_images:
            return ds, {}
        from .data.datasets import SkipBadImages, drop_skipped
        return SkipBadImages(ds, self.skip_log), {"collate_fn": drop_skipped}

    def features(self, split: str, transform: dict[str, Any], *, feature_mode: str | None = None,
                 dataset: str | None = None, mmap: bool = False) -> FeatureSet:
        """Features of `split`, from --features or extraction (cached). `mmap`: the caller reads rows in chunks,
        so the matrix may stay a read-only memory map of the file in its stored dtype (bench.cache)."""
        dataset = dataset or self.dataset
        key = f"{dataset}/{split}"
        if self.features_dir is not None:
            sub = self.features_dir if dataset == self.dataset else self.features_dir / dataset
            fs = load_feature_split(sub, split, mmap=mmap)
            self.inputs[key] = {"source": "features", "path": str(sub / f"{split}.npz"),
                                "sha256": _sha256_once(sub / f"{split}.npz"), "count": len(fs),
                                "dim": int(fs.features.shape[1]), "feature_mode": fs.meta.get("feature_mode"),
                                "transform": fs.meta.get("transform")}
            return fs
        backbone = self.require_backbone("feature extraction")
        mode = self.resolve_feature_mode(feature_mode)
        spec = self.transform_spec(transform)
        images = self.open_images(split, build_eval_transform(spec), dataset)
        prec = self.precision("extraction")
        fs = extract_features(backbone, images, split=split, dataset_name=dataset, feature_mode=mode,
                              transform=spec.to_dict(), data_root=str(self.data_root.path),
                              cache_dir=self.cache_dir, batch_size=self.batch_size, workers=self.workers,
                              device=self.device, amp=prec, mmap=mmap)
        self.inputs[key] = {"source": "extracted", "count": len(fs), "dim": int(fs.features.shape[1]),
                            "feature_mode": mode, "transform": spec.to_dict(), "cache_hit": fs.meta["cache_hit"],
                            "amp": prec.cache_key}
        return fs

    def num_classes(self, *label_arrays: np.ndarray) -> int:
        spec = DATASETS.get(self.dataset) if self.dataset in DATASETS else None
        observed = int(max(int(np.max(a)) for a in label_arrays)) + 1
        if spec and spec.num_classes and not self.mini and self.features_dir is None:
            return max(spec.num_classes, observed)
        return observed


_SHA256: dict[tuple, str] = {}


def _sha256_once(path: Path) -> str:
    """sha256 of a --features file, hashed once per run: the inputs block and the source id both need it, and a
    1.28M × 1024 fp16 file takes seconds to read."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = sha256_file(path)
    return _SHA256[key]


def _source_id(ctx: RunContext) -> str:
    if ctx.backbone is not None:
        return ctx.backbone.weights_id
    h = hashlib.sha256()
    for p in sorted(Path(ctx.features_dir).rglob("*.npz")):
        h.update(p.name.encode() + _sha256_once(p).encode())
    return f"features:{h.hexdigest()}"


def _backbone_tag(ctx: RunContext) -> str:
    if ctx.backbone is None:
        return f"features-{Path(ctx.features_dir).name}"
    rep = ctx.backbone.report
    return f"{rep.arch}-random" if rep.family == "random" else Path(rep.source).stem


def _checkpoint_block(ctx: RunContext) -> dict[str, Any]:
    if ctx.backbone is None:
        return {"name": f"features:{ctx.features_dir}", "path": None, "sha256": None, "arch": None, "family": None}
    rep = ctx.backbone.report
    name = "random" if rep.family == "random" else rep.source if rep.layout == "hf-hub" else Path(rep.source).name
    return {"name": name,
            "path": None if rep.family == "random" else rep.source, "sha256": rep.sha256, "arch": rep.arch,
            "family": rep.family, "layout": rep.layout, "ckpt_key": rep.ckpt_key,
            "coverage_pct": round(100 * rep.coverage, 3), "library": rep.library,
            "registry_name": rep.registry_name, "pos_embed_rule": rep.pos_embed_rule,
            **({"pos_embed_rule_set": True} if rep.pos_embed_rule_set else {})}


def _pretrain(ctx: RunContext) -> dict[str, Any]:
    """The checkpoint's pre-training setting: checkpoints.yaml `pretrain:` of its entry, then --ckpt-meta."""
    from .backbones.zoo import check_pretrain
    from .sweep import catalog_entry_for
    hit = catalog_entry_for(_checkpoint_block(ctx)) if ctx.backbone is not None else None
    base = check_pretrain((hit[1].pretrain if hit else None) or {}, f"checkpoints.yaml: {hit[0]}: pretrain"
                          if hit else "pretrain")
    return {**base, **check_pretrain(ctx.ckpt_meta, "--ckpt-meta")}


# options whose value is a path (semisup --subset-file, retrieval --distractors, robustness --alexnet-record): the
# run key holds what the path holds, not where it is, so the run id does not change with the machine
_PATH_OPTIONS = ("subset_file", "distractors", "alexnet_record")


def _stable_options(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    for key in _PATH_OPTIONS:
        value = out.get(key)
        if isinstance(value, str) and value:
            path = Path(value)
            # a file by its content; a folder (a million distractor images) by its name, hashing it would cost a pass
            out[key] = f"sha256:{sha256_file(path)}" if path.is_file() else f"folder:{path.name}"
    return out


def _not_comparable(ctx: RunContext, overrides: dict[str, Any]) -> list[str]:
    reasons = []
    if ctx.mini:
        reasons.append("miniature data")
    if ctx.quick:
        reasons.append("--quick")
    if overrides:
        reasons.append(f"preset overridden: {', '.join(sorted(overrides))}")
    if ctx.resolution:
        reasons.append(f"--resolution {ctx.resolution}")
    if ctx.feature_mode:
        reasons.append(f"--feature-mode {ctx.feature_mode}")
    if ctx.backbone is not None and ctx.backbone.report.family != "random" and ctx.backbone.report.coverage < 1:
        reasons.append(f"partial load ({ctx.backbone.report.coverage:.1%})")
    return reasons


def run_protocol(protocol: str, ctx: RunContext, *, preset: str | None = None,
                 overrides: dict[str, Any] | None = None, out_dir: Path | str = "results",
                 force: bool = False) -> tuple[dict[str, Any], Path, bool]:
    """Run one protocol and write its record. Returns (record, path, reused) — reused when the record existed."""
    spec = get_protocol(protocol)
    check_seeds(protocol, ctx.seeds)
    overrides = overrides or {}
    preset_obj, preset_name = resolve_preset(protocol, spec.preset_cls, preset, overrides)
    version = preset_version(protocol, preset_name)
    if ctx.backbone is None and not spec.accepts_features:
        raise BenchError(f"protocol {protocol!r} trains on images and needs a backbone (--model/--ckpt), "
                         f"not --features")
    # The version is in the key so a record of an older preset version is never reused for the current one.
    # No path in the key (the data root differs per machine; `mini` says which data it was): the run id is the
    # same for the same settings + weights everywhere.
    run_key = {"protocol": protocol, "preset": preset_name, "preset_version": version, "overrides": overrides,
               "source": _source_id(ctx), "dataset": ctx.dataset, "mini": ctx.mini,
               "feature_mode": ctx.feature_mode, "resolution": ctx.resolution, "quick": ctx.quick,
               "seed": ctx.seed, "options": _stable_options(ctx.options), "amp": amp_key(ctx.amp),
               **({"skip_bad_images": True} if ctx.skip_bad_images else {})}
    # the pre-training setting names which ablation the weights are: in the run key (so another --ckpt-meta is
    # another record) only when given, so the keys of runs without one are unchanged
    pretrain = _pretrain(ctx)
    if pretrain:
        run_key["pretrain"] = pretrain
    if ctx.seeds > 1:   # like pretrain: only when given, so single-seed run ids are unchanged
        run_key["seeds"] = ctx.seeds
    rid = run_id(run_key)
    path = record_path(Path(out_dir), protocol=protocol, preset=preset_name, backbone_tag=_backbone_tag(ctx),
                       dataset=ctx.dataset + ("-mini" if ctx.mini else ""), run_id_=rid)
    if path.exists() and not force:
        return read_record(path), path, True
    seed_everything(ctx.seed)
    start = time.perf_counter()
    skipped = []
    if ctx.skip_bad_images:
        import tempfile
        fd, log = tempfile.mkstemp(prefix="bench-skipped-", suffix=".txt")
        os.close(fd)
        ctx.skip_log = Path(log)
    try:
        result: ProtocolResult = run_seeds(spec.run, ctx, preset_obj, ctx.seeds)
    finally:
        if ctx.skip_log is not None:
            skipped = sorted(set(ctx.skip_log.read_text().split("\n")) - {""})
            ctx.skip_log.unlink(missing_ok=True)
    wall = time.perf_counter() - start
    _check_metrics(protocol, result.metrics)
    settings = {"protocol": protocol, "preset": preset_name, "preset_version": version,
                "preset_settings": preset_settings(preset_obj),
                "inputs": stable_inputs(ctx.inputs), "options": ctx.options, "quick": ctx.quick, "mini": ctx.mini}
    if ctx.backbone is not None and ctx.backbone.report.pos_embed_rule_set:   # a hand-set rule moves the number
        settings["pos_embed_rule"] = ctx.backbone.report.pos_embed_rule
    reasons = _not_comparable(ctx, overrides)
    if skipped:
        reasons.append(f"{len(skipped)} unreadable image(s) skipped (--skip-bad-images)")
    record = {
        "protocol": protocol, "preset": preset_name, "preset_version": version,
        "paper": getattr(preset_obj, "paper", ""),
        "preset_source": getattr(preset_obj, "source", ""), "preset_settings": asdict(preset_obj),
        "overrides": overrides, "run_id": rid, "fingerprint": fingerprint(settings), "fingerprint_settings": settings,
        "inputs": ctx.inputs,
        "comparable": not reasons, "not_comparable_because": reasons, "checkpoint": _checkpoint_block(ctx),
        "pretrain": pretrain,
        "backbone_report": ctx.backbone.report.to_dict() if ctx.backbone else None,
        "dataset": {"name": ctx.dataset, "root": str(ctx.data_root.path) if ctx.data_root else None,
                    "mini": ctx.mini, "counts": {k: v["count"] for k, v in ctx.inputs.items()}},
        "metrics": result.metrics, "headline": list(result.headline), "details": result.details,
        "quick": ctx.quick, "seed": ctx.seed, "run_key": run_key, "environment": environment(str(ctx.device)),
        "wall_time_s": round(wall, 3), "precision": {"amp": ctx.amp, **ctx.precision_used},
        **uncertainty_block(result.samples, result.metrics, protocol=protocol),
    }
    if result.seeds:
        record["seeds"] = result.seeds
    if ctx.class_notes:
        record["dataset"]["class_notes"] = dict(ctx.class_notes)
    if ctx.skip_bad_images:
        record["skipped_images"] = {"count": len(skipped), "files": skipped[:50]}
    if dd.is_main():  # under torchrun every rank computes, one writes
        write_record(record, path)
    dd.barrier()
    return read_record(path), path, False


def _check_metrics(protocol: str, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise BenchError(f"protocol {protocol!r} produced non-finite metrics {bad}; no record written")
