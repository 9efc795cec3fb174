"""`checkpoints.yaml`: the published checkpoints by name, fetched into the cache with a checksum check.

`--ckpt NAME` resolves to `<cache>/checkpoints/<file>`. A file already placed there is used without any network
access. Otherwise it is downloaded (progress bar, written atomically) when a network is there; offline the
error says which URL to fetch and where to put the file. A checksum mismatch is an error, never a warning;
checksums are only the ones the publisher gives (sha256, or an md5 prefix in the file name/README).
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from .._io import default_file_mode, remove_stale_temps, sha256_file
from .._yaml import read_yaml
from ..errors import CheckpointError

__all__ = ["CheckpointEntry", "Unavailable", "packaged_file", "PRETRAIN_KEYS", "check_pretrain", "registry_path",
           "load_registry", "load_unavailable", "get_entry", "published_names", "recognise_file", "checkpoint_file",
           "fetch_checkpoint"]

_logger = logging.getLogger(__name__)
MINI_SCHEME = "mini:"     # url of a reference miniature checkpoint: trained locally by bench/data/mini_checkpoints.py
PACKAGE_SCHEME = "package:"   # url of a checkpoint shipped inside bench (bench/_data/checkpoints/<file>)
_FIELDS = {"name", "url", "file", "path", "sha256", "sha256_prefix", "md5_prefix", "family", "layout", "arch", "ckpt_key",
           "preprocessing", "feature_mode", "numbers", "source", "how_to_get", "notes", "method", "pretrain"}
# Pre-training settings an ablation table can tell apart (checkpoints.yaml `pretrain:`, `bench run --ckpt-meta`);
# a closed list, so a typo (momentun) is an error rather than a silently unmatched row.
PRETRAIN_KEYS = ("momentum", "temperature", "mlp", "aug_plus", "cos", "stop_grad", "epochs", "batch", "objective",
                 "nce_m", "sampling", "sm_ratio", "mechanism", "queue", "pretrain_data")


@dataclass(frozen=True)
class CheckpointEntry:
    name: str
    url: str | None = None
    family: str | None = None          # how to read the file (bench.backbones families); None: from its keys
    arch: str | None = None
    source: str = ""                   # the repo/README the URL comes from
    file: str | None = None            # cache file name (default: the URL's last component)
    path: str | None = None            # a file already on this machine: used as is (still checksum-verified)
    sha256: str | None = None
    sha256_prefix: str | None = None   # the hex in the publisher's file name (torch.hub check_hash, OpenMMLab)
    md5_prefix: str | None = None
    layout: str | None = None          # the layout the file must be detected as
    ckpt_key: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    feature_mode: str | None = None    # the feature the paper's linear probe read
    numbers: tuple[dict, ...] = ()     # documented results: protocol, metric, value, table
    method: str | None = None          # the method name tables match on (default: the family)
    pretrain: dict[str, Any] = field(default_factory=dict)   # pre-training setting (PRETRAIN_KEYS), for ablations
    how_to_get: str | None = None      # when there is no direct URL (TF/dill originals that need a converter)
    notes: str | None = None

    @property
    def filename(self) -> str:
        return cache_filename(self.name, self.url, self.file)


def cache_filename(name: str, url: str | None, file: str | None = None) -> str:
    """The file name `--ckpt NAME` stores a registry checkpoint under in `<cache>/checkpoints/`. Prefixed with the
    name: several publishers reuse basenames (resnet50.pth, checkpoint_teacher.pth)."""
    return file or (f"{name}-{url.rsplit('/', 1)[-1]}" if url else f"{name}.pth")


def registry_path() -> Path:
    """$BENCH_CHECKPOINTS_YAML, else the package's `_data/checkpoints.yaml` (in the repository a link to the
    top-level `checkpoints.yaml`; a wheel holds a copy)."""
    if env := os.environ.get("BENCH_CHECKPOINTS_YAML"):
        return Path(env)
    return Path(__file__).resolve().parent.parent / "_data" / "checkpoints.yaml"


def load_registry(path: str | os.PathLike | None = None) -> dict[str, CheckpointEntry]:
    """name → entry of checkpoints.yaml, the one parser of that file (`--ckpt NAME`, `python -m bench.sweep`, the
    tables). `checkpoints:` is a list of entries with a `name` (the repository's layout) or a mapping name → fields;
    a bad file is one CheckpointError naming the file. Parsed once per file version."""
    path = Path(path or registry_path())
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint registry ({e.strerror}); fix the path in "
                              f"$BENCH_CHECKPOINTS_YAML or unset it") from None
    return dict(_parse_registry(str(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=8)
def _parse_registry(path_s: str, _mtime_ns: int, _size: int) -> dict[str, CheckpointEntry]:
    path = Path(path_s)
    try:
        data = read_yaml(path, CheckpointError)
    except CheckpointError as e:   # keep the registry's wording; read_yaml's line number goes in the parentheses
        detail = str(e).removeprefix(str(path)).lstrip(":").strip()
        raise CheckpointError(f"{path}: cannot read the checkpoint registry (line {detail})"
                              if detail[:1].isdigit() else f"{path}: cannot read the checkpoint registry "
                              f"({detail})") from None
    items = data.get("checkpoints") if isinstance(data, dict) else None
    if isinstance(items, dict):
        items = [{**v, "name": k} if isinstance(v, dict) else v for k, v in items.items()]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CheckpointError(f"{path}: 'checkpoints:' must be a list of entries (name, url, family, arch, ...) "
                              f"or a mapping of name to such fields")
    out = {}
    for item in items:
        unknown = set(item) - _FIELDS
        if unknown or not item.get("name"):
            raise CheckpointError(f"{path}: entry {item.get('name')!r} has unknown fields {sorted(unknown)}"
                                  if unknown else f"{path}: every entry of 'checkpoints' needs a name")
        item = {**item, "name": str(item["name"])}
        if item["name"] in out:
            raise CheckpointError(f"{path}: checkpoint {item['name']!r} listed twice")
        for key in ("sha256", "sha256_prefix", "md5_prefix"):   # unquoted hex like 59fd9945 would be read as a number
            if item.get(key) is not None and not isinstance(item[key], str):
                raise CheckpointError(f"{path}: {item['name']}: quote {key} ({item[key]!r}) as a string")
        item = {**item, "numbers": tuple(item.get("numbers") or ()), "source": str(item.get("source") or ""),
                "pretrain": check_pretrain(item.get("pretrain") or {}, f"{path}: {item['name']}: pretrain")}
        entry = CheckpointEntry(**item)
        _check_filename(path, entry)
        out[item["name"]] = entry
    return out


@dataclass(frozen=True)
class Unavailable:
    """A system of the reference tables with no public checkpoint (or none whose URL could be read at a source):
    checkpoints.yaml `no_public_checkpoint:`. `arch` None covers every arch of the method."""
    method: str
    reason: str
    arch: str | None = None
    tables: tuple[str, ...] = ()


def load_unavailable(path: str | os.PathLike | None = None) -> tuple[Unavailable, ...]:
    """checkpoints.yaml `no_public_checkpoint:` (absent: none); a bad item is one CheckpointError naming the file."""
    path = Path(path or registry_path())
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read the checkpoint registry ({e.strerror})") from None
    return _parse_unavailable(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _parse_unavailable(path_s: str, _mtime_ns: int, _size: int) -> tuple[Unavailable, ...]:
    path = Path(path_s)
    data = read_yaml(path, CheckpointError)
    items = (data or {}).get("no_public_checkpoint") or [] if isinstance(data, dict) else []
    out = []
    for item in items if isinstance(items, list) else [items]:
        if not isinstance(item, dict) or not item.get("method") or not item.get("reason") \
                or set(item) - {"method", "arch", "tables", "reason"}:
            raise CheckpointError(f"{path}: each 'no_public_checkpoint' item needs method and reason (optional arch, "
                                  f"tables), not {item!r}")
        out.append(Unavailable(str(item["method"]), str(item["reason"]),
                               str(item["arch"]) if item.get("arch") else None,
                               tuple(str(t) for t in item.get("tables") or ())))
    return tuple(out)


def check_pretrain(meta: Any, where: str) -> dict[str, Any]:
    """A pre-training setting as given (checkpoints.yaml `pretrain:` or --ckpt-meta): a mapping of known keys to
    scalars; otherwise a CheckpointError that names `where` and the keys bench knows."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: must be a mapping of key: value (e.g. momentum: 0.999), not {meta!r}")
    unknown = sorted(set(map(str, meta)) - set(PRETRAIN_KEYS))
    if unknown:
        raise CheckpointError(f"{where}: unknown pre-training key(s) {unknown}; use {', '.join(PRETRAIN_KEYS)}")
    bad = [k for k, v in meta.items() if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise CheckpointError(f"{where}: {bad} must be a number, yes/no or a word, not a list or mapping")
    return {str(k): v for k, v in meta.items()}


def _check_filename(path: Path, entry: CheckpointEntry) -> None:
    """The cache file name must stay inside <cache>/checkpoints/: a `file` (or URL basename) with a separator,
    `..` or an absolute path would let a registry entry write anywhere."""
    name = entry.filename
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or os.path.isabs(name) or name.startswith("."))
    if bad or Path(name).name != name:
        raise CheckpointError(f"{path}: {entry.name}: file name {name!r} must be a plain file name (no '/', "
                              f"'..', leading '.' or absolute path); fix its 'file' field")


def get_entry(name: str) -> CheckpointEntry | None:
    return load_registry().get(name)


def published_names(entry: CheckpointEntry) -> set[str]:
    """File names a registry checkpoint is known by: the URL's last part (URL-decoded), `file`, and the name
    `--ckpt NAME` caches it under."""
    from urllib.parse import unquote
    names = {entry.filename}
    if entry.url and not entry.url.startswith(MINI_SCHEME):
        names.add(unquote(entry.url.rstrip("/").rsplit("/", 1)[-1]))
    if entry.file:
        names.add(entry.file)
    return names


def recognise_file(path: str | os.PathLike, sha256: str | None = None) -> tuple[CheckpointEntry, str] | None:
    """The registry entry a file given by path is, and how it was told: its sha256 equals an entry's `sha256` or
    starts with its `sha256_prefix`; failing that, its file name is one entry's published name and no other
    entry's (checkpoint_best.pth, resnet50.pth ... name several files and are never enough). bench's miniature
    checkpoints are never matched: they are loaded by name. None when nothing matches."""
    entries = [e for e in load_registry().values() if not (e.url or "").startswith(MINI_SCHEME)]
    if sha256:
        sha256 = sha256.lower()
        hits = [e for e in entries if (e.sha256 and e.sha256.lower() == sha256)
                or (e.sha256_prefix and sha256.startswith(e.sha256_prefix.lower()))]
        if len(hits) == 1:
            return hits[0], "sha256"
    name = Path(path).name
    hits = [e for e in entries if name in published_names(e)]
    return (hits[0], "file name") if len(hits) == 1 else None


def checkpoint_file(entry: CheckpointEntry, cache: Path | None = None) -> Path:
    from ..data import cache_dir
    return Path(cache or cache_dir()) / "checkpoints" / entry.filename


def _verify(path: Path, entry: CheckpointEntry, shown: Path | None = None) -> None:
    shown = shown or path
    if entry.sha256 and sha256_file(path) != entry.sha256:
        raise CheckpointError(f"{shown}: sha256 differs from checkpoints.yaml ({entry.name}); delete it and "
                              f"re-download {entry.url}")
    if entry.sha256_prefix and not sha256_file(path).startswith(entry.sha256_prefix.lower()):
        raise CheckpointError(f"{shown}: sha256 does not start with {entry.sha256_prefix} as its published name "
                              f"says ({entry.name}); delete it and re-download {entry.url}")
    if entry.md5_prefix:
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if not h.hexdigest().startswith(entry.md5_prefix):
            raise CheckpointError(f"{shown}: md5 does not start with {entry.md5_prefix} as published for "
                                  f"{entry.name}; delete it and re-download {entry.url}")


def _download(url: str, dest: Path, entry: CheckpointEntry) -> None:
    """Stream `url` to a temp file beside `dest`, check its length and checksum, then rename it into place:
    an interrupted or damaged download never sits under the final name.

    Not torch.hub.download_url_to_file: on a connection that closes early it keeps the short body (http.client's
    read(n) returns b"" instead of raising IncompleteRead, checked on Python 3.11), and its only guard is a sha256
    prefix, which no publisher in checkpoints.yaml gives; it also has no timeout."""
    from tqdm.auto import tqdm
    dest.parent.mkdir(parents=True, exist_ok=True)
    # left by a killed download: ours, an earlier bench's `<stem>-partial<suffix>`, torch.hub's `<name>.<hex>.partial`
    for pattern in (f".{dest.name}.*.part", f"{dest.stem}-partial{dest.suffix}", f"{dest.name}.*.partial"):
        remove_stale_temps(dest.parent, pattern)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            got = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=os.environ.get("BENCH_PROGRESS") == "0") as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        if total is not None and got != total:
            raise CheckpointError(f"{entry.name}: download of {url} stopped at {got} of {total} bytes; run again "
                                  f"(nothing was kept) or fetch it by hand and put it at {dest}")
        try:
            _verify(Path(tmp), entry, shown=dest)
        except CheckpointError:
            shutil.move(tmp, str(dest) + ".bad")
            raise
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def packaged_file(entry: CheckpointEntry) -> Path:
    """Where a `package:` checkpoint lies inside the installed bench."""
    return Path(__file__).resolve().parent.parent / "_data" / "checkpoints" / entry.url[len(PACKAGE_SCHEME):]


def fetch_checkpoint(name: str, cache: Path | None = None) -> tuple[Path, CheckpointEntry]:
    """The local file for registry entry `name`, downloading it if needed. Raises CheckpointError offline."""
    entry = get_entry(name)
    if entry is None:
        raise CheckpointError(f"{name}: neither a file nor a name in checkpoints.yaml "
                              f"(see the names in checkpoints.yaml)")
    if entry.url and entry.url.startswith(PACKAGE_SCHEME):
        own = packaged_file(entry)
        if not own.is_file():
            raise CheckpointError(f"{name}: {own} is missing from this installation of bench; reinstall it "
                                  f"(pip install -e .) or rebuild the file: {entry.how_to_get}")
        _verify(own, entry)
        return own, entry
    if entry.path and (own := Path(entry.path).expanduser()).is_file():
        _verify(own, entry)
        return own, entry
    dest = checkpoint_file(entry, cache)
    if entry.url and entry.url.startswith(MINI_SCHEME):
        # bench's reference miniature checkpoints are trained here, never downloaded
        from ..data.mini_checkpoints import ensure_mini_checkpoint
        return ensure_mini_checkpoint(entry.url[len(MINI_SCHEME):], dest), entry
    if dest.is_file():
        _verify(dest, entry)
        return dest, entry
    if not entry.url:
        raise CheckpointError(f"{name}: no direct download ({entry.how_to_get}); put the converted file at {dest}")
    _logger.info("downloading %s → %s", entry.url, dest)
    try:
        _download(entry.url, dest, entry)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        raise CheckpointError(f"{name}: cannot download ({reason}); run again, or fetch {entry.url} and put it "
                              f"at {dest}") from None
    return dest, entry
