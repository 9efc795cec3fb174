"""load_backbone(): safe read → recognise the layout → map keys → timm/torchvision model + a load report.

A partial or mismatched load is an error, never a warning: numbers from half-loaded weights look plausible.
"""
from __future__ import annotations

import contextlib

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._io import sha256_file, sha256_json
from ..errors import CheckpointError
from ._assemble import FROM_KEYS, fit_resolution, load_strict, plan_model
from ._build import create_model, split_arch
from ._export import read_bench_metadata
from ._padding import use_tf_same_padding
from ._safe_load import pickle_globals, read_checkpoint
from .families import IMAGENET_MEAN, IMAGENET_STD, family_spec
from .features import compute_features, default_feature_mode, describe_probe_feature, is_vit, probe_feature_mode
from ._timm_filter import apply_arch_filter, by_arch, capture_filter
from .layouts import Converted, detect_layout, list_layouts
from .pos_embed import POS_EMBED_RULES, install_pos_embed_rule, pos_embed_rule_for
from .zoo import CheckpointEntry, fetch_checkpoint, get_entry, recognise_file

__all__ = ["Backbone", "LoadReport", "Preprocessing", "load_backbone", "DEFAULT_ARCH"]

DEFAULT_ARCH = "resnet18"


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
    model_kwargs: dict[str, Any] = field(default_factory=dict)   # arguments the arch was built with
    registry_name: str | None = None                              # the checkpoints.yaml name, when loaded by name
    pickle_globals: list[str] = field(default_factory=list)       # non-tensor globals in the file (allowlisted)
    dropped_keys: dict[str, list[str]] = field(default_factory=dict)  # group → its first keys, for inspection
    stubbed_globals: list[str] = field(default_factory=list)     # --trust-checkpoint: globals not importable here
    pos_embed_rule: str | None = None     # how a ViT's position grid is resampled off its grid (pos_embed.py)
    pos_embed_rule_set: bool = False      # True: chosen by hand (--pos-embed-rule), not by the family

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
    merged = {**asdict(base), **overrides}
    return Preprocessing(mean=tuple(merged["mean"]), std=tuple(merged["std"]), interpolation=merged["interpolation"])


def _state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _is_path(source: str) -> bool:
    return os.path.sep in source or Path(source).suffix in {".pth", ".pt", ".bin", ".tar", ".ckpt", ".safetensors",
                                                            ".pkl", ".torch"} or Path(source).exists()


def _extra_objects(obj: Any) -> list[str]:
    """Top-level entries that are not tensors or tensor dicts, with their type ("args (argparse.Namespace)")."""
    if not isinstance(obj, dict):
        return []
    out = []
    for k, v in obj.items():
        if isinstance(v, torch.Tensor) or (isinstance(v, dict) and v and all(
                isinstance(t, torch.Tensor) for t in v.values())):
            continue
        t = type(v)
        out.append(f"{k} ({t.__qualname__ if t.__module__ == 'builtins' else f'{t.__module__}.{t.__qualname__}'})")
    return sorted(out)


def _convert(obj: Any, source: str, ckpt_key: str | None, meta: dict | None,
             arch: str | None = None) -> tuple[str, Converted]:
    """(layout name, converted backbone). `--ckpt-key` goes to a layout that chooses among sub-models
    (teacher/student, model/model_ema); for any other file it selects that top-level entry first. A file of no
    known layout is taken as `arch`'s own state dict (the `by-arch` layout; timm's filter maps it later)."""
    if meta is not None:   # written by `bench convert`: recognised by its metadata, before any key matcher
        return "bench-convert", Converted(dict(obj), "bench-convert")
    if ckpt_key is not None and not any(lay.selects_key and lay.matches(obj) for lay in list_layouts()
                                        if isinstance(obj, dict)):
        if not isinstance(obj, dict) or ckpt_key not in obj:
            keys = sorted(obj) if isinstance(obj, dict) else []
            raise CheckpointError(f"{source}: no key {ckpt_key!r} in the checkpoint (top-level keys: {keys[:8]})")
        obj = obj[ckpt_key]
    layout = detect_layout(obj, source, allow_unknown=arch is not None)
    if layout is None:
        return "by-arch", by_arch(obj, source, arch)
    try:
        return layout.name, layout.convert(obj, {"ckpt_key": ckpt_key})
    except CheckpointError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _random_backbone(arch: str | None, seed: int) -> Backbone:
    arch = arch or DEFAULT_ARCH
    torch.manual_seed(seed)
    model, library = create_model(arch)
    report = LoadReport(source="random", arch=arch, library=library, family="random", coverage=0.0,
                        feature_mode=default_feature_mode(model), notes=[f"random init, seed {seed}"])
    pre = _model_preprocessing(model, {})
    report.preprocessing = asdict(pre)
    return Backbone(model.eval(), report, pre, weights_id=f"random:{_state_digest(model)}")


def names_pretrained_weights(arch: str | None) -> bool:
    """`hf-hub:org/name` or a timm name with a pretrained tag (`vit_small_patch14_dinov2.lvd142m`): the user asked
    for published weights, never for a random model of that shape."""
    if not arch:
        return False
    if arch.startswith("hf-hub:"):
        return True
    library, name = split_arch(arch)
    if library == "torchvision":
        return False
    from timm.models import split_model_name_tag
    return bool(split_model_name_tag(name)[1])


def _hub_file(hub_id: str) -> Path | None:
    """The cached weights file timm read for `hub_id` (safetensors first, as timm prefers it)."""
    from huggingface_hub import try_to_load_from_cache
    repo, _, revision = hub_id.partition("@")
    for fname in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname, revision=revision or None)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _hub_reachable(timeout: float = 1.5) -> bool:
    """One TCP connect to the hub's endpoint: without a network, huggingface_hub retries for about a minute before
    it gives up, so bench asks once and answers in a second or two."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_when_possible(arch: str, hub_id: str | None):
    """Weights already in the hub cache: load them with the hub offline (no request at all). Not cached and no
    network: the one-line error at once. Otherwise timm downloads them as usual."""
    from huggingface_hub import constants
    if hub_id is None or constants.HF_HUB_OFFLINE:
        yield
        return
    if _hub_file(hub_id) is None:
        if not _hub_reachable():
            raise CheckpointError(f"--model {arch}: its pretrained weights are not in the Hugging Face cache "
                                  f"({constants.HF_HUB_CACHE}) and {constants.ENDPOINT} cannot be reached; run once "
                                  f"with network access, copy a hub cache there, or give the file with --ckpt")
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _pretrained_backbone(arch: str) -> Backbone:
    """timm's published weights through the Hugging Face hub cache (offline once cached, as HF_HUB_OFFLINE says);
    the report names the hub repository, its snapshot and the file's sha256."""
    import timm
    from huggingface_hub import constants
    name = arch if arch.startswith("hf-hub:") else split_arch(arch)[1]
    if not name.startswith("hf-hub:") and timm.models.get_pretrained_cfg(name) is None:
        base = name.split(".")[0]
        raise CheckpointError(f"--model {arch}: timm has no such pretrained tag; the tags of {base} are "
                              f"{timm.list_pretrained(base + '.*')[:8]}")
    cfg0 = None if name.startswith("hf-hub:") else timm.models.get_pretrained_cfg(name)
    hub_id0 = name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else getattr(cfg0, "hf_hub_id", None)
    try:
        with _hub_offline_when_possible(arch, hub_id0):
            try:
                model = timm.create_model(name, pretrained=True, num_classes=0, dynamic_img_size=True)
            except TypeError:
                model = timm.create_model(name, pretrained=True, num_classes=0)
    except CheckpointError:
        raise
    except Exception as e:   # huggingface_hub / urllib raise many types for "not cached and offline"
        raise CheckpointError(f"--model {arch}: its pretrained weights are not in the Hugging Face cache "
                              f"({constants.HF_HUB_CACHE}) and could not be fetched ({type(e).__name__}); run once "
                              f"with network access, copy a hub cache there, or give the file with --ckpt") from None
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hub_id = cfg.get("hf_hub_id") or (name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else None)
    file = _hub_file(hub_id) if hub_id else None
    if file is None:
        raise CheckpointError(f"--model {arch}: timm loaded weights from {cfg.get('url') or 'a source'} that bench "
                              f"cannot pin to a file; download that file and give it with --ckpt")
    revision = file.parent.name   # hub cache: models--org--name/snapshots/<commit>/<file>
    report = LoadReport(source=f"hf-hub:{hub_id}@{revision}", arch=arch, library="timm", family="timm-pretrained",
                        layout="hf-hub", sha256=sha256_file(file), feature_mode=default_feature_mode(model),
                        notes=[f"timm pretrained weights {hub_id} (snapshot {revision}, {file.name})"])
    pre = _model_preprocessing(model, {})
    report.preprocessing = asdict(pre)
    return Backbone(model.eval(), report, pre, weights_id=f"hf-hub:{hub_id}:{report.sha256}")


def _pos_embed_rule(model: nn.Module, family: str, kind: str | None, chosen: str | None = None) -> str | None:
    """Install the family's position-grid rule (or `chosen`, --pos-embed-rule) on a timm ViT with an absolute
    embedding; its name, or None."""
    has_grid = isinstance(getattr(model, "pos_embed", None), torch.Tensor) and hasattr(model, "_pos_embed")
    if chosen is not None:
        if chosen not in POS_EMBED_RULES.names():
            raise CheckpointError(f"--pos-embed-rule {chosen}: unknown rule; choose one of "
                                  f"{', '.join(POS_EMBED_RULES.names())}")
        if not has_grid:
            raise CheckpointError(f"--pos-embed-rule {chosen}: this backbone has no absolute position grid to "
                                  f"resample (a CNN, or relative positions); drop the flag")
        install_pos_embed_rule(model, chosen)
        return chosen
    if not has_grid:
        return None
    rule = pos_embed_rule_for(family, kind, has_registers=getattr(model, "reg_token", None) is not None)
    if rule is not None:
        install_pos_embed_rule(model, rule)
    return rule


def _resolve_source(source: str) -> tuple[Path, CheckpointEntry | None]:
    if _is_path(source):
        return Path(source), None
    if get_entry(source) is None:
        raise CheckpointError(f"{source}: no such checkpoint file and not a name in checkpoints.yaml; give a path "
                              f"to a .pth/.safetensors file or a registry name")
    return fetch_checkpoint(source)


def _recognised(path: Path, sha: str, entry: CheckpointEntry | None, meta: dict | None) -> tuple | None:
    """A file given by path that is a registry entry (its sha256, else its unique published name): (entry, how)."""
    if entry is not None or meta is not None:
        return None
    return recognise_file(path, sha)


def load_backbone(source: str | os.PathLike | None = None, arch: str | None = None, *, ckpt_key: str | None = None,
                  allow_partial: bool = False, trust_checkpoint: bool = False, seed: int = 0,
                  pos_embed_rule: str | None = None) -> Backbone:
    """Build a backbone with its weights and a report of how it was loaded.

    Args:
        source: a checkpoint path, a name from checkpoints.yaml, or None: random weights ("random" rows), or
            timm's published weights when `arch` carries a pretrained tag or is an `hf-hub:` id.
        arch: timm/torchvision architecture name ("resnet50", "vit_small_patch16_224", "tv:resnet50");
            inferred from the keys and shapes when None.
        ckpt_key: which sub-model to read when a file holds several (DINO/iBOT "teacher" (default) / "student",
            data2vec "model" (default) / "model_ema"), or any top-level entry of another file.
        allow_partial: load even if some backbone tensors are missing or unexpected (recorded in the report).
        trust_checkpoint: allow full unpickling; only for files from a source you trust.
        seed: seeds random initialisation, so a "random" backbone is reproducible.
        pos_embed_rule: how a ViT resamples its position grid off the stored size (bench.backbones.pos_embed
            rules: dino, dinov2, mae, timm, ...), instead of its family's own rule.
    """
    if source is None:
        return _pretrained_backbone(arch) if names_pretrained_weights(arch) else _random_backbone(arch, seed)
    path, entry = _resolve_source(str(source))
    stubbed: list[str] = []
    obj = read_checkpoint(path, trust=trust_checkpoint, stubbed=stubbed)
    meta = read_bench_metadata(path) if path.suffix == ".safetensors" else None
    sha = sha256_file(path)
    # a released file given by path is its registry entry: by sha256 at once; by file name only if its keys agree
    recognised = _recognised(path, sha, entry, meta)
    if recognised is not None and recognised[1] == "sha256":
        entry = recognised[0]
    arch = arch or (entry.arch if entry else None) or ((meta or {}).get("arch"))
    layout, conv = _convert(obj, str(path), ckpt_key if entry is None or ckpt_key else entry.ckpt_key, meta,
                            None if arch == FROM_KEYS else arch)
    if recognised is not None and entry is None and recognised[0].layout in (None, layout):
        entry = recognised[0]
        arch = arch or entry.arch
    if entry is not None and entry.layout and layout != entry.layout:
        raise CheckpointError(f"{path}: is a {layout!r} checkpoint, but checkpoints.yaml says {entry.name} is "
                              f"{entry.layout!r}; delete the file and fetch {entry.url}")
    family = family_spec(entry.family if entry and entry.family else (meta or {}).get("family", conv.family))
    plan = plan_model(conv.state_dict, arch, family, str(path))
    if plan.kind is None and conv.model_kwargs:
        plan.kwargs.update(conv.model_kwargs)
        plan.notes.append(f"built with {conv.model_kwargs}, as the file's {layout} layout fixes")
    if plan.kind is None and layout == "flat" and not (entry and entry.family):
        family = family_spec("timm-arch")   # the keys' guess (e.g. EVA's q_bias read as BEiT) was not the arch
    if meta is not None and arch == meta.get("arch"):
        plan.kwargs = dict(meta.get("model_kwargs") or {})   # rebuild exactly what was converted
        plan.notes.append(f"converted by bench convert from {meta.get('source')} (sha256 {meta.get('source_sha256')}, "
                          f"{meta.get('layout')} layout)")
    torch.manual_seed(seed)
    with capture_filter(plan.arch) as timm_filter:
        model, library = create_model(plan.arch, **plan.kwargs)
    if plan.kind is None:   # no bench-side recognition of these keys: timm's own mapping for this arch
        plan.state_dict, dropped, notes = apply_arch_filter(plan.state_dict, model, library, plan.arch,
                                                            timm_filter["fn"], timm_filter["module"])
        plan.dropped.update(dropped)
        plan.notes.extend(notes)
    rule = _pos_embed_rule(model, family.name, plan.kind, pos_embed_rule)
    fit_resolution(plan, model, rule)
    mode = (entry.feature_mode if entry else None) or (meta or {}).get("feature_mode") or (
        family.feature_mode(plan.kind, plan.width) if plan.kind else probe_feature_mode(model))
    if plan.kind is None and not (entry and entry.feature_mode):
        plan.notes.append(f"feature {mode!r}: {describe_probe_feature(model, mode)}")
    report = LoadReport(
        source=str(path), arch=plan.arch, library=library, family=family.name, layout=layout,
        sha256=sha, ckpt_key=conv.ckpt_key or ckpt_key,
        dropped={g: len(k) for g, k in {**conv.dropped, **plan.dropped}.items()},
        dropped_keys={g: k[:5] for g, k in {**conv.dropped, **plan.dropped}.items()},
        extra_objects=_extra_objects(obj), feature_mode=mode, notes=list(conv.notes) + plan.notes,
        model_kwargs=dict(plan.kwargs), registry_name=entry.name if entry else None,
        pickle_globals=pickle_globals(path), pos_embed_rule=rule, stubbed_globals=stubbed,
        pos_embed_rule_set=pos_embed_rule is not None)
    if recognised is not None and entry is recognised[0]:
        report.notes.append(f"recognised as checkpoints.yaml {entry.name} by its {recognised[1]}: family, "
                            f"position-grid rule and feature are that entry's")
    if stubbed:
        report.notes.append(f"--trust-checkpoint: stubbed globals the file names but this process cannot import "
                            f"(training-script objects; no tensor depends on them): {', '.join(stubbed)}")
    if family.tf_same_padding and plan.kind == "resnet":
        n = use_tf_same_padding(model)
        report.notes.append(f"{n} convolutions / max-pools pad TF 'SAME' (asymmetric at stride 2), as "
                            f"{family.name} was trained")
    if rule is not None:
        report.notes.append(f"position grid resampled off {tuple(model.patch_embed.grid_size)} with the "
                            f"{rule!r} rule (bench.backbones.pos_embed"
                            + (", set by --pos-embed-rule)" if pos_embed_rule is not None else ")"))
    load_strict(model, plan.state_dict, report, allow_partial)
    overrides = {**family.preprocessing(), **(entry.preprocessing if entry else {}),
                 **((meta or {}).get("preprocessing") or {})}
    pre = _model_preprocessing(model, overrides)
    report.preprocessing = asdict(pre)
    weights_id = f"file:{report.sha256}:{report.ckpt_key}:{plan.arch}:{layout}:{sha256_json(plan.kwargs)[:12]}"
    if family.tf_same_padding and plan.kind == "resnet":
        weights_id += ":tf-same"
    if rule is not None and rule != "timm":   # the rule changes features at every other resolution
        weights_id += f":pos-{rule}"
    if report.missing:  # random tensors remain: their values depend on the seed
        weights_id += f":partial-seed{seed}"
    return Backbone(model.eval(), report, pre, weights_id=weights_id)
