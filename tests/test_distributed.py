"""torchrun-sharded extraction equals the single process; the submitit launcher runs a job locally."""
import json
import os
import shutil
import subprocess


import numpy as np
import pytest

from bench.cli import main
from bench.launch import strip_launcher_args


def test_two_process_extraction_equals_single_process(mini_root, tmp_path):
    common = ["extract", "--data-root", str(mini_root), "--resolution", "32", "--split", "train,val"]
    assert main(common + ["--out", str(tmp_path / "single")]) == 0
    torchrun = shutil.which("torchrun") or pytest.skip("torchrun not on PATH")
    env = {**os.environ, "BENCH_CACHE": str(tmp_path / "cache2"), "BENCH_PROGRESS": "0"}
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "bench", *common,
                          "--out", str(tmp_path / "multi")], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for split in ("train", "val"):
        a, b = np.load(tmp_path / "single" / f"{split}.npz"), np.load(tmp_path / "multi" / f"{split}.npz")
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["features"], b["features"], rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "multi" / "meta.json").read_text())["counts"] == {"train": 1437, "val": 360}
    leftovers = [p.name for p in (tmp_path / "cache2").rglob("*shard*")]
    assert leftovers == [], "shard files must be cleaned up after gathering"


def test_strip_launcher_args():
    argv = ["run", "--protocol", "knn", "--launcher", "slurm", "--partition=gpu", "--gpus", "4", "--wait",
            "--out", "r"]
    assert strip_launcher_args(argv) == ["run", "--protocol", "knn", "--out", "r"]


def test_submitit_local_job_writes_the_record(mini_root, tmp_path, capsys):
    pytest.importorskip("submitit")
    out = tmp_path / "res"
    code = main(["run", "--protocol", "knn", "--preset", "instdisc", "--data-root", str(mini_root), "--out", str(out),
                 "--model", "resnet18", "--resolution", "32", "--launcher", "submitit-local", "--job-dir", str(tmp_path / "jobs"), "--wait"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "submitted job" in printed
    (record,) = (out / "runs").glob("*.json")
    assert f"record written: {record}" in printed and "top1" in printed   # --wait shows the job's metrics
    assert not (tmp_path / "jobs" / "%j").exists()
    rec = json.loads(record.read_text())
    assert rec["preset"] == "instdisc" and "launcher" not in " ".join(map(str, rec["run_key"].values()))


def test_failing_job_reports_failure(tmp_path, capsys):
    pytest.importorskip("submitit")
    code = main(["run", "--protocol", "knn", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path),
                 "--launcher", "submitit-local", "--job-dir", str(tmp_path / "jobs"), "--wait"])
    assert code == 2 and "failed" in capsys.readouterr().err


def test_slurm_needs_a_partition(capsys):
    assert main(["run", "--protocol", "knn", "--launcher", "slurm"]) == 2
    assert "--partition" in capsys.readouterr().err




def test_slurm_without_sbatch_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("bench.launch.shutil.which", lambda name: None)
    assert main(["run", "--protocol", "knn", "--launcher", "slurm", "--partition", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "sbatch" in err and "submitit-local" in err and "Traceback" not in err
