"""What `run_all.sh` sweeps: the checkpoints of `checkpoints.yaml` that are on this machine, and why others are not.

`checkpoints.yaml` lists entries {name, url, sha256, family, arch, method, file/path, numbers} (bench/backbones/zoo.py).
Every field is optional here: an entry is *local* when `path` exists, or when the file `--ckpt NAME` caches
(`<name>-<url's last part>`, bench.backbones.zoo) or the publisher's own file name (`file`, else the url's last
part) is in `$BENCH_CHECKPOINTS` or `<cache>/checkpoints/`. Nothing is downloaded.

`python3 -m bench.sweep` prints one line per checkpoint, `run<TAB>name<TAB>path<TAB>arch` or
`skip<TAB>name<TAB>why`, which is all run_all.sh needs.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from .errors import BenchError

__all__ = ["catalog_path", "checkpoint_catalog", "catalog_entry_for", "plan_checkpoints"]


def catalog_path() -> Path:
    """The registry `--ckpt NAME` reads (bench.backbones.zoo.registry_path): one file for both."""
    from .backbones.zoo import registry_path
    return registry_path()


@functools.lru_cache(maxsize=None)
def _load_catalog(path: str) -> dict[str, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise BenchError(f"{p}: invalid YAML ({e}); fix the file") from e
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if entries is None:
        return {}
    if isinstance(entries, list):   # the repository's layout: a list of entries, each with its `name`
        if not all(isinstance(e, dict) and e.get("name") for e in entries):
            raise BenchError(f"{p}: every entry of 'checkpoints' needs a name")
        entries = {e["name"]: e for e in entries}
    if not isinstance(entries, dict):
        raise BenchError(f"{p}: 'checkpoints' must be a list of entries or a mapping of name → fields")
    return {str(k): (v if isinstance(v, dict) else {}) for k, v in entries.items()}


def checkpoint_catalog() -> dict[str, dict[str, Any]]:
    """name → fields of checkpoints.yaml; {} when the file is absent or empty."""
    return _load_catalog(str(catalog_path()))


def _file_name(entry: dict[str, Any]) -> str | None:
    name = entry.get("file") or (str(entry["url"]).rstrip("/").rsplit("/", 1)[-1] if entry.get("url") else None)
    return str(name) if name else None


def _file_names(key: str, entry: dict[str, Any]) -> list[str]:
    """Names the checkpoint may have on disk: where `--ckpt NAME` caches it (bench.backbones.zoo), and the
    publisher's own file name (a download by hand)."""
    from .backbones.zoo import cache_filename
    names = [cache_filename(key, entry.get("url"), entry.get("file"))]
    return list(dict.fromkeys(names + ([own] if (own := _file_name(entry)) else [])))


def catalog_entry_for(checkpoint: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The catalog entry of a record's `checkpoint` block: by name, then file name, then sha256."""
    catalog = checkpoint_catalog()
    name, sha = checkpoint.get("name"), checkpoint.get("sha256")
    for direct in (checkpoint.get("registry_name"), name):
        if direct in catalog:
            return direct, catalog[direct]
    for key, entry in sorted(catalog.items()):
        path_name = Path(str(entry["path"])).name if entry.get("path") else None
        if name and (name == path_name or name in _file_names(key, entry)):
            return key, entry
        if sha and entry.get("sha256") and str(entry["sha256"]).lower() == str(sha).lower():
            return key, entry
    return None


def _search_dirs() -> list[Path]:
    from .data import cache_dir
    dirs = [Path(os.environ["BENCH_CHECKPOINTS"])] if os.environ.get("BENCH_CHECKPOINTS") else []
    return dirs + [Path(cache_dir()) / "checkpoints"]


def plan_checkpoints() -> list[tuple[str, str, str | None, str | None]]:
    """[(action, name, path_or_reason, arch)] for every catalog entry; action is 'run' or 'skip'."""
    plan = []
    for name, entry in sorted(checkpoint_catalog().items()):
        arch = entry.get("arch")
        candidates = [Path(str(entry["path"])).expanduser()] if entry.get("path") else []
        candidates += [d / fname for d in _search_dirs() for fname in _file_names(name, entry)]
        found = next((p for p in candidates if p.is_file()), None)
        from .backbones.zoo import MINI_SCHEME, fetch_checkpoint
        if found is None and str(entry.get("url") or "").startswith(MINI_SCHEME):
            found = fetch_checkpoint(name)[0]   # a reference miniature checkpoint: trained here on first use
        if found is None:
            where = ", ".join(str(p) for p in candidates) or "no path/url/file in checkpoints.yaml"
            plan.append(("skip", name, f"not on this machine (looked in: {where})", arch))
        elif not arch:
            plan.append(("skip", name, "checkpoints.yaml gives no arch", arch))
        else:
            plan.append(("run", name, str(found), str(arch)))
    return plan


def main() -> int:
    for action, name, what, arch in plan_checkpoints():
        print("\t".join([action, name, what or "", arch or ""]) if action == "run" else f"skip\t{name}\t{what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
