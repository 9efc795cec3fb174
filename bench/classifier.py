"""Trained classifiers that outlive their run: the linear / fine-tuning protocols save theirs, robustness reads them.

A saved classifier is one weights-only safetensors file (`classifier.safetensors` in the run's folder under the
cache) whose metadata says what it is: `kind` (linear: a head on frozen features; finetune: the whole
fine-tuned network), the backbone it belongs to (`weights_id`), the feature mode, the class list (wnids, in
output order) and the eval transform the protocol scored it with. The record's `details.classifier` holds the
same block plus the file's path and sha256, so `--classifier` may name the record, its fingerprint or the file.

`own`: a supervised checkpoint's own head (timm `pretrained_cfg['classifier']`, torchvision's last Linear) read
from the checkpoint file, on the backbone's pooled feature — the model's logits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ._io import atomic_write_bytes, sha256_file
from .errors import BenchError, CheckpointError

__all__ = ["Classifier", "save_classifier", "load_classifier", "dataset_classes", "imagenet_wnids"]

FILE_NAME = "classifier.safetensors"


def dataset_classes(ds) -> list[str] | None:
    """The class names (wnids) of an ImageFolder-like dataset in label order, through Subset wrappers."""
    while ds is not None:
        if getattr(ds, "class_to_idx", None):
            return [c for c, _ in sorted(ds.class_to_idx.items(), key=lambda kv: kv[1])]
        ds = getattr(ds, "dataset", None)
    return None


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's wnids in the sorted order torchvision/timm classifiers are trained with."""
    from timm.data import ImageNetInfo
    return list(ImageNetInfo().label_names())


def save_classifier(run_dir: Path, kind: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Write `state` (weights only) + `meta` beside a run; returns the record's `classifier` block."""
    from safetensors.torch import save
    meta = {"kind": kind, **meta}
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = atomic_write_bytes(Path(run_dir) / FILE_NAME, save(tensors, metadata={"bench": json.dumps(meta)}))
    return {**meta, "path": str(path), "sha256": sha256_file(path)}


@dataclass
class Classifier:
    """images → logits over `classes`, with the eval transform its protocol used."""
    kind: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    classes: list[str]
    transform: dict[str, Any] | None      # TransformSpec fields; None: the robustness preset's
    info: dict[str, Any] = field(default_factory=dict)


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("bench", "null"))
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a bench classifier file ({e}); re-run the linear/finetune protocol")
    if not isinstance(meta, dict) or "kind" not in meta:
        raise CheckpointError(f"{path}: safetensors without bench classifier metadata; give the record or the "
                              f"classifier.safetensors a linear/finetune run wrote")
    return state, meta


def _find_block(spec: str, results: Path) -> dict:
    """The `classifier` block of a record (path, or fingerprint / file-name prefix under results/runs)."""
    from .records import read_record
    path = Path(spec)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise BenchError(f"{path}: classifier file not found")
        _, meta = _read_file(path)
        return {**meta, "path": str(path), "sha256": sha256_file(path)}
    if path.suffix == ".json" and path.is_file():
        records = [path]
    else:
        runs = results / "runs"
        records = sorted(p for p in runs.glob("*.json") if spec in p.stem or _fingerprint(p).startswith(spec)) \
            if runs.is_dir() else []
        if len(records) != 1:
            raise BenchError(f"--classifier {spec}: {len(records)} records under {runs} match; give the record's "
                             f"path, its fingerprint, or a classifier.safetensors file")
    rec = read_record(records[0])
    block = (rec.get("details") or {}).get("classifier")
    if not block:
        raise BenchError(f"{records[0]}: this {rec.get('protocol')} record saved no classifier (linear records of the "
                         f"augmented presets and finetune records do; re-run it with this bench)")
    return block


def _fingerprint(path: Path) -> str:
    try:
        return str(json.loads(path.read_text()).get("fingerprint", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def _linear_head(state: dict[str, torch.Tensor]) -> nn.Module:
    bn = "0.running_mean" in state   # MAE: BatchNorm1d(affine=False) before the linear layer (make_head)
    w = state["1.weight" if bn else "weight"]
    fc = nn.Linear(w.shape[1], w.shape[0])
    head = nn.Sequential(nn.BatchNorm1d(w.shape[1], affine=False, eps=1e-6), fc) if bn else fc
    head.load_state_dict(state)
    return head.eval()


def load_classifier(spec: str, backbone, *, results: Path, device: torch.device, data_root: Path | None,
                    seed: int = 0) -> Classifier:
    """`spec`: 'own', a record (path / fingerprint / name), or a classifier.safetensors file."""
    if spec == "own":
        return _own_head(backbone, device, data_root, seed)
    block = _find_block(spec, results)
    path = Path(block["path"])
    if not path.is_file():
        raise BenchError(f"{path}: the classifier file the record names is gone (the cache was cleared); re-run "
                         f"its {block['kind']} protocol")
    if block.get("sha256") and sha256_file(path) != block["sha256"]:
        raise BenchError(f"{path}: sha256 differs from the record's; the file was replaced, re-run its protocol")
    if block.get("weights_id") != backbone.weights_id:
        raise BenchError(f"--classifier {spec}: trained on backbone {block.get('weights_id')}, not on "
                         f"{backbone.weights_id}; pass the --ckpt (and --arch) that run used")
    state, _ = _read_file(path)
    info = {k: v for k, v in block.items() if k not in ("classes",)}
    if block["kind"] == "linear":
        head = _linear_head(state).to(device)
        mode = block["feature_mode"]

        def forward(x):
            return head(backbone.features(x, mode).float())
        return Classifier("linear", forward, list(block["classes"]), block.get("eval_transform"), info)
    if block["kind"] == "finetune":
        from .protocols._finetune_train import build_finetune_model
        from .protocols.finetune import FinetunePreset
        import dataclasses
        fields = {f.name for f in dataclasses.fields(FinetunePreset)}
        preset = FinetunePreset(**{k: (tuple(v) if isinstance(v, list) and k == "betas" else v)
                                   for k, v in block["preset"].items() if k in fields})
        model, _ = build_finetune_model(backbone, preset, len(block["classes"]), int(block["input_size"]))
        model.load_state_dict(state)
        model.to(device).eval()
        return Classifier("finetune", model, list(block["classes"]), block.get("eval_transform"), info)
    raise BenchError(f"{path}: unknown classifier kind {block['kind']!r}")


def _own_head(backbone, device, data_root: Path | None, seed: int) -> Classifier:
    rep = backbone.report
    if rep.family == "random":   # a random-init model's own (random) head: the floor robustness is ranked above
        classes = _mini_classes(data_root) or imagenet_wnids()
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64, device=next(backbone.model.parameters()).device)
            dim = backbone.features(probe, "pool").shape[1]
        torch.manual_seed(seed)
        fc = nn.Linear(dim, len(classes))
        source = "random init"
    else:
        fc, source = _checkpoint_fc(backbone)
        classes = _classes_for(fc.out_features, data_root, rep.source)
    fc = fc.to(device).eval()

    def forward(x):
        return fc(backbone.features(x, "pool").float())
    return Classifier("own", forward, classes, None, {"kind": "own", "head": source, "num_classes": len(classes)})


def _mini_classes(data_root: Path | None) -> list[str] | None:
    train = Path(data_root) / "imagenet" / "train" if data_root else None
    return sorted(p.name for p in train.iterdir() if p.is_dir()) if train and train.is_dir() else None


def _classes_for(n: int, data_root: Path | None, source: str) -> list[str]:
    local = _mini_classes(data_root)
    if local and len(local) == n:
        return local
    if n == 1000:
        return imagenet_wnids()
    raise BenchError(f"{source}: its head has {n} outputs, neither ImageNet-1k's 1000 nor the {len(local or [])} "
                     f"classes of {data_root}/imagenet/train; robustness needs an ImageNet classifier")


def _head_name(backbone) -> str:
    rep = backbone.report
    if rep.library == "timm":
        name = (getattr(backbone.model, "pretrained_cfg", None) or {}).get("classifier")
        if name:
            return name
    if rep.library == "torchvision":
        import torchvision
        from .backbones._build import split_arch
        full = torchvision.models.get_model(split_arch(rep.arch)[1], weights=None)
        return [n for n, m in full.named_modules() if isinstance(m, nn.Linear)][-1]
    raise BenchError(f"{rep.arch}: cannot tell where its classifier head lives; use a linear/finetune record")


def _checkpoint_fc(backbone) -> tuple[nn.Linear, str]:
    from .backbones._safe_load import read_checkpoint
    rep = backbone.report
    obj = read_checkpoint(Path(rep.source), trust=False)
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)} \
        if isinstance(obj, dict) else {}
    name = _head_name(backbone)
    w, b = sd.get(f"{name}.weight"), sd.get(f"{name}.bias")
    if w is None or w.ndim != 2:
        raise CheckpointError(f"{rep.source}: no classifier head {name}.weight in the file; --classifier own needs "
                              f"a supervised checkpoint with its head (else train one: linear / finetune protocol)")
    fc = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        fc.weight.copy_(w.float())
        if b is not None:
            fc.bias.copy_(b.float())
    return fc, f"{name}.weight of {Path(rep.source).name}"
