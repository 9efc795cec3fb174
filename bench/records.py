"""Run records: one JSON file per run under `<out>/runs/`, named by its run id, written atomically.

The fingerprint hashes every setting that can move the number (preset, transform, feature mode, splits, counts),
not the weights: two backbones run with the same fingerprint are comparable with each other and, when the
settings are the documented preset's on the full data, with the paper.

The run id hashes the run key: the settings given before the run (protocol, preset and its version, overrides,
dataset and whether it is the miniature, options, seed) plus the weights' identity (checkpoint sha256, hub
id + file hash, or the features' content hash). What cannot move the number stays out of both (the data root's
path, a feature-cache hit, output paths, timestamps, threads), so the same settings + weights give the same id on
every machine: a rerun resumes/overwrites the same file, other weights or settings give another.
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, sha256_json
from ._text import safe_name
from .errors import BenchError
from .record_schema import MAX_RECORD_BYTES, record_problem

__all__ = ["SCHEMA_VERSION", "fingerprint", "stable_inputs", "run_id", "record_run_id", "record_path", "write_record",
           "read_record", "read_records", "record_problem", "record_files", "environment"]

SCHEMA_VERSION = 1


def fingerprint(settings: dict[str, Any]) -> str:
    return sha256_json(settings)[:16]


# per-input fields that describe how the input was obtained, not what it was (its sha256 / transform / count do)
_UNSTABLE_INPUT_KEYS = ("cache_hit", "path", "cache")


def stable_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A run's inputs without the fields that change between identical runs (cache hit, file paths)."""
    return {k: {kk: vv for kk, vv in v.items() if kk not in _UNSTABLE_INPUT_KEYS} if isinstance(v, dict) else v
            for k, v in inputs.items()}


def run_id(run_key: dict[str, Any]) -> str:
    """The stable id of a run: 12 hex digits of the run key's hash (settings + weights identity, no paths)."""
    return sha256_json(run_key)[:12]


def record_run_id(record: dict[str, Any]) -> str:
    """A record's run id: the one it stores, else computed from its run key (records written before run ids)."""
    if isinstance(record.get("run_id"), str):
        return record["run_id"]
    key = {k: v for k, v in (record.get("run_key") or {}).items() if k != "data_root"}
    key.setdefault("mini", bool((record.get("dataset") or {}).get("mini")))
    return run_id(key)


def _slug(text: str) -> str:
    return safe_name(text, limit=60)


def record_path(out_dir: Path, *, protocol: str, preset: str, backbone_tag: str, dataset: str, run_id_: str) -> Path:
    """Deterministic path from the run id: the same run lands on the same file, so sweeps can resume; the readable
    prefix is for people, the id alone tells runs apart."""
    name = "__".join(_slug(p) for p in (protocol, preset, backbone_tag, dataset)) + f"__{run_id_}.json"
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
        if Path(path).stat().st_size > MAX_RECORD_BYTES:
            raise BenchError(f"{path}: {Path(path).stat().st_size} bytes is no run record (at most "
                             f"{MAX_RECORD_BYTES}); delete it and re-run")
        rec = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BenchError(f"{path}: not UTF-8 text (byte {e.start}); not a run record, delete it and re-run") from None
    except RecursionError:
        raise BenchError(f"{path}: JSON nested too deep to be a run record; delete it and re-run") from None
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{path}: unreadable run record ({e}); delete it and re-run") from e
    if not isinstance(rec, dict):
        raise BenchError(f"{path}: not a run record (a JSON object); delete it and re-run")
    if rec.get("schema_version") != SCHEMA_VERSION:
        raise BenchError(f"{path}: record schema {rec.get('schema_version')} is not {SCHEMA_VERSION}; re-run it")
    return rec


def record_files(out_dir: Path, *, skip_bad: bool = False) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every record under OUT/runs/, sorted by file name. With skip_bad, a record that is
    unreadable or has fields of the wrong type is left out with a warning naming it, so one damaged file does not
    hide every table."""
    runs = Path(out_dir) / "runs"
    out = []
    for p in sorted(runs.glob("*.json")) if runs.is_dir() else []:
        try:
            rec = read_record(p)
            problem = record_problem(rec)
        except BenchError as e:
            if not skip_bad:
                raise
            problem, rec = str(e).removeprefix(f"{p}: "), None
        if problem is None:
            out.append((p, rec))
        elif skip_bad:
            logging.getLogger(__name__).warning("skipping %s: %s%s", p, problem,
                                                "" if "delete it" in problem else " (fix or delete it)")
        else:
            raise BenchError(f"{p}: {problem}; fix or delete the record")
    return out


def read_records(out_dir: Path, *, skip_bad: bool = False) -> list[dict[str, Any]]:
    """Every record under OUT/runs/ (see `record_files`)."""
    return [rec for _, rec in record_files(out_dir, skip_bad=skip_bad)]
