"""Run records: one JSON file per run under `<out>/runs/`, named by its run key, written atomically.

The fingerprint hashes every setting that can move the number (preset, transform, feature mode, splits, counts),
not the weights: two backbones run with the same fingerprint are comparable with each other and, when the
settings are the documented preset's on the full data, with the paper.
"""
from __future__ import annotations

import json
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, sha256_json
from .errors import BenchError

__all__ = ["SCHEMA_VERSION", "fingerprint", "record_path", "write_record", "read_record", "read_records",
           "environment"]

SCHEMA_VERSION = 1


def fingerprint(settings: dict[str, Any]) -> str:
    return sha256_json(settings)[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-")[:60] or "x"


def record_path(out_dir: Path, *, protocol: str, preset: str, backbone_tag: str, dataset: str,
                fingerprint_: str, weights_id: str) -> Path:
    """Deterministic path from the run key: the same run lands on the same file, so sweeps can resume."""
    key = sha256_json([fingerprint_, weights_id])[:10]
    name = "__".join(_slug(p) for p in (protocol, preset, backbone_tag, dataset)) + f"__{key}.json"
    return Path(out_dir) / "runs" / name


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch

    from . import __version__
    env = {"bench": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
           "torch": torch.__version__, "numpy": numpy.__version__, "device": device, "platform": platform.platform()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:   # the installed version without importing timm (2–3 s: it pulls in torch._dynamo and torchvision ops)
        from importlib.metadata import version
        env["timm"] = version("timm")
    except ImportError:
        pass
    return env


def write_record(record: dict[str, Any], path: Path) -> Path:
    record = {"schema_version": SCHEMA_VERSION,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **record}
    return atomic_write_json(path, record)


def read_record(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{path}: unreadable run record ({e}); delete it and re-run") from e
    if rec.get("schema_version") != SCHEMA_VERSION:
        raise BenchError(f"{path}: record schema {rec.get('schema_version')} is not {SCHEMA_VERSION}; re-run it")
    return rec


def read_records(out_dir: Path) -> list[dict[str, Any]]:
    runs = Path(out_dir) / "runs"
    return [read_record(p) for p in sorted(runs.glob("*.json"))] if runs.is_dir() else []

