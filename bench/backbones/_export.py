"""`bench convert`: a clean backbone-only safetensors file whose metadata carries the load report.

Loading the file back needs no pickle and no layout guessing: the metadata names the arch and the model
arguments, so the model is rebuilt exactly and every tensor has its place (coverage 100%).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import CheckpointError

__all__ = ["save_backbone", "read_bench_metadata", "METADATA_KEY"]

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
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: damaged bench metadata ({e}); re-run bench convert") from None

