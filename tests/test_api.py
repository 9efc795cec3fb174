"""bench.evaluate: the CLI's run as one call, same record, options checked like flags."""
from __future__ import annotations

import json

import pytest

import bench
from bench.errors import BenchError


def test_evaluate_equals_the_cli_record(mini_root, tmp_path):
    from bench.cli import main
    rec = bench.evaluate("resnet18", "knn", data_root=mini_root, quick=True, out=tmp_path / "api", seed=1)
    assert main(["run", "--protocol", "knn", "--model", "resnet18", "--quick", "--seed", "1", "--data-root",
                 str(mini_root), "--out", str(tmp_path / "cli")]) == 0
    (cli,) = [json.loads(p.read_text()) for p in (tmp_path / "cli" / "runs").glob("*.json")]
    assert rec["run_key"] == cli["run_key"] and rec["metrics"] == cli["metrics"]
    assert rec["checkpoint"]["name"] == "random" and not rec["comparable"]


def test_evaluate_takes_a_backbone_and_checks_options(mini_root, tmp_path):
    bb = bench.load_backbone(None, "resnet18", seed=2)
    with pytest.raises(BenchError, match="has no option 'percent'"):
        bench.evaluate(bb, "semisup", data_root=mini_root, quick=True, out=tmp_path, percent=1)
    with pytest.raises(BenchError, match="--labels-percent: invalid choice: 7"):
        bench.evaluate(bb, "semisup", data_root=mini_root, quick=True, out=tmp_path, labels_percent=7)
    with pytest.raises(BenchError, match="takes no options"):
        bench.evaluate(bb, "knn", data_root=mini_root, quick=True, out=tmp_path, k=3)
