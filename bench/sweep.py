"""What `run_all.sh` sweeps: the checkpoints of `checkpoints.yaml` that are on this machine, and why others are not.

`checkpoints.yaml` lists entries {name, url, sha256, family, arch, method, file, path, numbers}, read by the one
parser in bench/backbones/zoo.py (`$BENCH_CHECKPOINTS_YAML` for both). An entry is *local* when `path` exists, or
when the file `--ckpt NAME` caches (`<name>-<url's last part>`, bench.backbones.zoo) or the publisher's own file
name (`file`, else the url's last part) is in `$BENCH_CHECKPOINTS` or `<cache>/checkpoints/`. Nothing is
downloaded.

`python3 -m bench.sweep` prints one line per checkpoint, `run<TAB>name<TAB>path<TAB>arch` or
`skip<TAB>name<TAB>why`, which is all run_all.sh needs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backbones.zoo import CheckpointEntry

__all__ = ["catalog_path", "checkpoint_catalog", "catalog_entry_for", "plan_checkpoints"]


def catalog_path() -> Path:
    """The registry `--ckpt NAME` reads (bench.backbones.zoo.registry_path): one file for both."""
    from .backbones.zoo import registry_path
    return registry_path()


def checkpoint_catalog() -> dict[str, CheckpointEntry]:
    """name → entry of checkpoints.yaml, parsed by bench.backbones.zoo.load_registry (one schema, one error)."""
    from .backbones.zoo import load_registry
    return load_registry()


def _file_name(entry: CheckpointEntry) -> str | None:
    name = entry.file or (entry.url.rstrip("/").rsplit("/", 1)[-1] if entry.url else None)
    return str(name) if name else None


def _file_names(entry: CheckpointEntry) -> list[str]:
    """Names the checkpoint may have on disk: where `--ckpt NAME` caches it (bench.backbones.zoo), and the
    publisher's own file name (a download by hand)."""
    return list(dict.fromkeys([entry.filename] + ([own] if (own := _file_name(entry)) else [])))


def catalog_entry_for(checkpoint: dict[str, Any]) -> tuple[str, CheckpointEntry] | None:
    """The catalog entry of a record's `checkpoint` block: by name, then file name, then sha256."""
    catalog = checkpoint_catalog()
    name, sha = checkpoint.get("name"), checkpoint.get("sha256")
    for direct in (checkpoint.get("registry_name"), name):
        if direct in catalog:
            return direct, catalog[direct]
    for key, entry in sorted(catalog.items()):
        path_name = Path(entry.path).name if entry.path else None
        if name and (name == path_name or name in _file_names(entry)):
            return key, entry
        if sha and entry.sha256 and entry.sha256.lower() == str(sha).lower():
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
        arch = entry.arch
        candidates = [Path(entry.path).expanduser()] if entry.path else []
        candidates += [d / fname for d in _search_dirs() for fname in _file_names(entry)]
        found = next((p for p in candidates if p.is_file()), None)
        from .backbones.zoo import MINI_SCHEME, PACKAGE_SCHEME, fetch_checkpoint
        if found is None and (entry.url or "").startswith((MINI_SCHEME, PACKAGE_SCHEME)):
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
    from .errors import BenchError
    try:
        plan = plan_checkpoints()
    except BenchError as e:   # the same one line `bench run --ckpt NAME` prints for a bad checkpoints.yaml
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    for action, name, what, arch in plan:
        print("\t".join([action, name, what or "", arch or ""]) if action == "run" else f"skip\t{name}\t{what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
