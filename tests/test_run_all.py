"""run_all.sh: --help answers without running anything, and Ctrl-C stops the sweep at once.

A stand-in `python3` ($PYTHON) answers the sweep's planning calls instantly and makes each `bench run` wait, the
way a real run does, exiting 130 on SIGINT like bench's main; so the test needs no model and no data.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE = """#!/usr/bin/env bash
echo "$*" >> "{calls}"
case "$*" in
  "-m bench list protocols") printf 'knn  k-NN\\nlinear  probe\\n' ;;
  "-m bench.sweep") ;;
  -c*) echo "{results}" ;;
  "-m bench run"*) trap 'exit 130' INT; echo started >> "{started}"; sleep 30 & wait ;;
  *) ;;
esac
"""


def _fake_python(tmp_path: Path) -> tuple[Path, Path, Path]:
    calls, started = tmp_path / "calls.txt", tmp_path / "started.txt"
    fake = tmp_path / "python3"
    fake.write_text(FAKE.format(calls=calls, started=started, results=tmp_path / "results"))
    fake.chmod(0o755)
    return fake, calls, started


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # as in a terminal (a background job would inherit SIG_IGN)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_runs_nothing(tmp_path, flag):
    fake, calls, _ = _fake_python(tmp_path)
    r = subprocess.run([str(ROOT / "run_all.sh"), flag], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "PYTHON": str(fake)})
    assert r.returncode == 0 and "./run_all.sh [--device cuda]" in r.stdout and "Ctrl-C" in r.stdout
    assert not calls.exists()


def test_ctrl_c_stops_the_sweep_at_once(tmp_path):
    fake, calls, started = _fake_python(tmp_path)
    proc = subprocess.Popen([str(ROOT / "run_all.sh")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHON": str(fake), "BENCH_DATA": ""}, start_new_session=True,
                            preexec_fn=_default_sigint)
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), "the first run never started"
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)     # what Ctrl-C does: the whole foreground process group
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130 and time.monotonic() - t0 < 5
    assert started.read_text().count("started") == 1            # the second run never started
    assert "interrupted" in out and "-m bench table" not in calls.read_text()
