"""The repository's own results/: the committed tables and plots are what the committed records regenerate
(`bench table --check`, as CI runs it), and they carry the reference miniature rows, marked and never compared."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench.records import read_records
from conftest import run_cli

RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.fixture(autouse=True)
def _repository_catalog(monkeypatch):
    monkeypatch.delenv("BENCH_CHECKPOINTS_YAML", raising=False)


def test_committed_tables_and_plots_agree_with_the_records(capsys):
    rc = run_cli("table", "--results", RESULTS, "--check")
    assert rc == 0, capsys.readouterr().out + "\nregenerate with `bench table` (or python results/regenerate.py)"


def test_reference_miniature_rows_are_committed_and_never_compared():
    from bench.data.mini_checkpoints import MINI_CHECKPOINTS
    records = read_records(RESULTS)
    assert {r["checkpoint"].get("registry_name") for r in records} >= set(MINI_CHECKPOINTS)
    assert all(r["dataset"]["mini"] and not r["comparable"] for r in records
               if r["checkpoint"].get("registry_name") in MINI_CHECKPOINTS)
    measured = []
    for table in sorted(RESULTS.glob("*__*.csv")):
        with table.open(newline="") as f:
            measured += [r for r in csv.DictReader(f) if r.get("source") == "measured" and "delta" in r]
    mini = [r for r in measured if r["checkpoint"] in MINI_CHECKPOINTS]
    assert mini and all(r["setting"] == "miniature" for r in mini)
    assert all(r["delta"].startswith("not compared: miniature data") for r in mini)
