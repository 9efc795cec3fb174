import os
from pathlib import Path

import pytest

os.environ.setdefault("BENCH_PROGRESS", "0")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache and never reads $BENCH_DATA. The one exception: the reference miniature
    checkpoints (minutes of CPU training each, deterministic) are trained once per user cache and recipe: kept in
    `<cache>/test-reference-checkpoints/<hash of the recipe and miniature sources, torch version>/`, taken from
    there when present and put there when a session trained them. (Not `<cache>/checkpoints/`: a file there may
    come from another version of the recipe under the same name, and the pins need exactly this recipe's.)"""
    cache = tmp_path_factory.mktemp("bench-cache")
    old = {k: os.environ.get(k) for k in ("BENCH_CACHE", "BENCH_DATA")}
    shared = Path(old["BENCH_CACHE"] or Path.home() / ".cache" / "bench") / "test-reference-checkpoints" / _recipe_key()
    pattern = _reference_checkpoint_pattern()
    (cache / "checkpoints").mkdir()
    for f in sorted(shared.glob(pattern)) if shared.is_dir() else []:
        (cache / "checkpoints" / f.name).symlink_to(f)
    os.environ["BENCH_CACHE"] = str(cache)
    os.environ.pop("BENCH_DATA", None)
    yield cache
    _keep_trained(cache / "checkpoints", shared, pattern)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _recipe_key() -> str:
    """What the reference checkpoints' bytes depend on: the training recipe, the miniature writers, torch."""
    import hashlib

    import torch

    import bench.data.mini_checkpoints as recipe
    src = Path(recipe.__file__).parent
    h = hashlib.sha256(torch.__version__.encode())
    for f in [Path(recipe.__file__), *sorted((src / "mini").glob("*.py"))]:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _reference_checkpoint_pattern() -> str:
    from bench.data.mini_checkpoints import MINI_CKPT_VERSION
    return f"mini_*-v{MINI_CKPT_VERSION}.pth"


def _keep_trained(trained: Path, shared: Path, pattern: str) -> None:
    import shutil
    import tempfile
    for f in sorted(trained.glob(pattern)):
        if f.is_symlink() or (shared / f.name).exists():
            continue
        try:
            shared.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=shared, prefix=f".{f.name}.", suffix=".tmp")
            os.close(fd)
            shutil.copyfile(f, tmp)
            os.replace(tmp, shared / f.name)
        except OSError:   # a read-only home: the next session trains them again
            pass


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core CI machine two spinning threads per
    process are many times slower. Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def mini_root(tmp_path_factory) -> Path:
    from bench.data.mini import write_minis
    root = tmp_path_factory.mktemp("mini")
    write_minis(root)
    return root


@pytest.fixture(scope="session")
def check_results(tmp_path_factory):
    """Shared results folder of the pinned runs (results/expected/): the first check runs them on the reference
    miniature checkpoints, the validity tests and later checks reuse their records."""
    return tmp_path_factory.mktemp("check")


def run_cli(*argv: str) -> int:
    from bench.cli import main
    return main([str(a) for a in argv])
