"""`bench convert`: a clean backbone-only safetensors file whose metadata carries the load report.

Loading the file back needs no pickle and no layout guessing: the metadata names the arch and the model
arguments, so the model is rebuilt exactly and every tensor has its place (coverage 100%).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import CheckpointError

__all__ = ["save_backbone", "read_bench_metadata", "metadata_problem", "METADATA_KEY", "SHAPE_KWARGS"]

METADATA_KEY = "bench.backbone"


def save_backbone(backbone, out: str | os.PathLike) -> Path:
    """Write `backbone.model`'s persistent state with its report as safetensors metadata (atomically)."""
    from safetensors.torch import save
    out = Path(out)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"{out}: the output must end in .safetensors")
    rep = backbone.report
    sd = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
    meta = {"arch": rep.arch, "model_kwargs": rep.model_kwargs, "family": rep.family, "layout": rep.layout,
            "feature_mode": rep.feature_mode, "preprocessing": rep.preprocessing, "source": rep.source,
            "source_sha256": rep.sha256, "ckpt_key": rep.ckpt_key, "dropped": rep.dropped,
            "registry_name": rep.registry_name}
    data = save(sd, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True, default=list)})
    return atomic_write_bytes(out, data)


def read_bench_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The report stored by `save_backbone`, or None for any other safetensors file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as e:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-create it") from None
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: damaged bench metadata ({e}); re-run bench convert") from None
    problem = metadata_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: bench metadata refused ({problem}); the file may name an architecture and "
                              f"its shape arguments only; re-create it with bench convert") from None
    return meta


# What metadata read from a file may pass to the model constructor: the shape arguments bench's own arch inference
# sets (bench/backbones/_arch.py, _assemble.py), nothing that names a file, a URL or a pretrained download
# (timm's checkpoint_path, pretrained, pretrained_cfg_overlay, ...).
SHAPE_KWARGS = frozenset({"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "reg_tokens",
                          "no_embed_class", "class_token", "init_values", "global_pool", "dynamic_img_size",
                          "use_abs_pos_emb", "use_shared_rel_pos_bias", "use_rel_pos_bias", "sobel", "qkv_bias",
                          "in_chans"})
_ARCH = re.compile(r"((timm|tv|torchvision)[:/])?[A-Za-z0-9_]{1,80}(\.[A-Za-z0-9_]{1,40})?")
_WORD = re.compile(r"[A-Za-z0-9_./+-]{0,64}")
_TEXT_FIELDS = ("family", "layout", "feature_mode", "ckpt_key", "registry_name")


def _shape_value(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float)):
        return True
    if isinstance(v, str):
        return bool(re.fullmatch(r"[a-z_]{0,16}", v))     # global_pool: 'avg', 'token', ''
    return isinstance(v, list) and len(v) <= 4 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def metadata_problem(meta: Any) -> str | None:
    """Why a file's bench metadata may not drive the model build (a key outside SHAPE_KWARGS, an arch that is not
    a plain model name, a field of the wrong type), or None."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    arch = meta.get("arch")
    if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
        return f"arch {str(arch)[:60]!r} is not a plain timm/torchvision model name"
    kwargs = meta.get("model_kwargs") or {}
    if not isinstance(kwargs, dict):
        return "model_kwargs is not a mapping"
    foreign = sorted(str(k)[:40] for k in kwargs if k not in SHAPE_KWARGS)
    if foreign:
        return f"model argument(s) {', '.join(foreign[:3])} not allowed"
    bad = sorted(k for k, v in kwargs.items() if not _shape_value(v))
    if bad:
        return f"model argument(s) {', '.join(bad[:3])} have values that are no shape"
    for key in _TEXT_FIELDS:
        if meta.get(key) is not None and not (isinstance(meta[key], str) and _WORD.fullmatch(meta[key])):
            return f"{key} is not a short name"
    return None

