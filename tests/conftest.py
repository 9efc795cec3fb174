import os
from pathlib import Path

import pytest

os.environ.setdefault("BENCH_PROGRESS", "0")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache and never touches ~/.cache or $BENCH_DATA."""
    cache = tmp_path_factory.mktemp("bench-cache")
    old = {k: os.environ.get(k) for k in ("BENCH_CACHE", "BENCH_DATA")}
    os.environ["BENCH_CACHE"] = str(cache)
    os.environ.pop("BENCH_DATA", None)
    yield cache
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
