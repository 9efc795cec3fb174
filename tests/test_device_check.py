"""benchmarks/device_check.py: without a GPU it says so in one line and exits 0; --cpu-smoke runs every GPU path's
code (k-NN, logreg, extraction, linear grid, detection and segmentation steps) at tiny sizes on the CPU."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "device_check.py"
pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest


def _module():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = mod     # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [out.stdout.strip()] and "no GPU found" in out.stdout


def test_cpu_smoke_runs_every_gpu_path(capsys):
    """torchrun is left out here (two interpreter start-ups; tests/test_distributed.py runs torchrun on gloo)."""
    checks = [c for c in _module().CHECKS if c != "torchrun"]
    assert _module().main(["--cpu-smoke", "--only", ",".join(checks)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert "FAILED" not in out
    for name in ("k-NN torch", "logreg 3-C path", "logreg one C", "extraction test_vit", "extraction test_resnet",
                 "linear grid", "detection iteration", "segmentation iteration"):
        assert any(line.startswith(f"| {name}") for line in table), name
    knn = next(line for line in table if line.startswith("| k-NN torch"))
    assert "same neighbours as bare: True" in knn        # bench's chunked path finds the bare search's neighbours


def test_unknown_check_is_refused():
    with pytest.raises(SystemExit):
        _module().main(["--cpu-smoke", "--only", "knn,warp"])
