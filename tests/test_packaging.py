"""A normal (non-editable) install must run: the presets and checkpoints.yaml travel inside the wheel."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_tree(tmp_path_factory):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"   # a copy, so the build leaves no build/ or egg-info behind in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "checkpoints.yaml"):
        shutil.copy(ROOT / name, src / name)
    for name in ("bench", "protocols"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(out), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("bench-*.whl")
    tree = out / "tree"
    with zipfile.ZipFile(whl) as z:
        z.extractall(tree)
    return tree


def test_wheel_carries_every_preset_file_and_the_registry(wheel_tree):
    shipped = sorted(p.name for p in (wheel_tree / "bench/_data/protocols").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (ROOT / "protocols").glob("*.yaml"))
    assert (wheel_tree / "bench/_data/checkpoints.yaml").read_text() == (ROOT / "checkpoints.yaml").read_text()
    assert not (wheel_tree / "bench/_data/protocols").is_symlink()


def test_installed_copy_runs_outside_the_repository(wheel_tree, tmp_path):
    """The wheel's bench, imported from a folder with no repository around it, lists presets and checkpoints."""
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_PROTOCOLS", "BENCH_CHECKPOINTS_YAML")}
    env["PYTHONPATH"] = str(wheel_tree)
    code = ("import bench, sys; from bench.cli import main; assert bench.__file__.startswith(sys.argv[1]); "
            "sys.exit(main(['list', 'presets']) or main(['list', 'checkpoints']))")
    r = subprocess.run([sys.executable, "-c", code, str(wheel_tree)], capture_output=True, text=True, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "knn" in r.stdout and "mocov2_800ep" in r.stdout
