"""Every file bench writes goes through these helpers: write to a temp file beside the target, then rename."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_npz", "sha256_file",
           "sha256_json", "to_jsonable", "safe_unpickle", "remove_stale_temps", "inside_root"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, root: str | os.PathLike | None = None) -> Path:
    return _atomic_write(path, lambda f: f.write(data), root)


def inside_root(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """`path`, when it lies under `root` once `..` and symlinks are resolved; else BenchError. Writers whose file
    names come from records pass their output root, so a name never places a file (or a folder) elsewhere."""
    real, top = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, top]) != top or real == top:
        from .errors import BenchError
        raise BenchError(f"{path}: outside the output folder {root}; refused (a name taken from a record?)")
    return Path(path)


def _atomic_write(path: str | os.PathLike, write, root: str | os.PathLike | None = None) -> Path:
    """Call write(file) on a temp file beside `path`, then rename it into place; with `root`, only under it."""
    path = Path(path) if root is None else inside_root(path, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes 0600 files; give the result the mode an ordinary open() would (umask applied).
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def default_file_mode() -> int:
    """The mode open() gives a new file under the current umask (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str, *, root: str | os.PathLike | None = None) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), root=root)


def to_jsonable(obj: Any) -> Any:
    """Tuples → lists, numpy scalars → Python, Paths → str, recursively; used for records and cache keys."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, *, root: str | os.PathLike | None = None) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n", root=root)


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    # straight into the temp file (uncompressed, so bench.cache can memory-map the members): no in-memory copy of
    # the whole archive, which for 1.28M × 1024 features would be another 5 GB
    return _atomic_write(path, lambda f: np.savez(f, **arrays))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able settings dict (sorted keys), the basis of fingerprints and cache keys."""
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# The only globals a data pickle (CIFAR batches, revisitop gnd files) needs: numpy array and scalar
# reconstruction. Containers, str/bytes and numbers need no global at all; anything else is refused, so a
# pickle from the internet can never run code.
_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _AllowlistUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")


def safe_unpickle(path: str | os.PathLike, error: type[Exception], fix: str) -> Any:
    """The object pickled in `path`, read with an allowlist (dicts, lists, str/bytes, numbers, numpy arrays).
    Anything else — or a damaged file — raises `error` naming the file and `fix`; no code in the file runs."""
    path = Path(path)
    try:
        return _AllowlistUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError,
            ImportError, OSError) as e:
        raise error(f"{path}: refused or unreadable pickle ({e}); {fix}") from None


def remove_stale_temps(folder: str | os.PathLike, pattern: str, older_than_s: float = 60.0) -> list[Path]:
    """Delete temp leftovers of a killed run (`pattern` globbed in `folder`) not written to for `older_than_s`;
    a live writer touches its temp file continually, so only orphans go."""
    import shutil
    import time
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.glob(pattern):
        try:
            if now - p.stat().st_mtime < older_than_s:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed
