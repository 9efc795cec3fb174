"""bench.results.load / bench.reference.load: records and documented numbers as DataFrames of the same shape."""
from __future__ import annotations

import pytest

import bench.reference
import bench.results
from bench.errors import BenchError
from bench.reference import reference_index, reference_table
from test_tables import _record, _write

pd = pytest.importorskip("pandas")
VIT = "vit_small_patch16_224"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    (root / "checkpoints.yaml").write_text(
        f"checkpoints:\n  dino_vits16:\n    file: dino_s16.pth\n    method: DINO\n    arch: {VIT}\n")
    res = root / "results"
    _write(res, [
        _record("knn", "dino", {"top1": 76.0, "top5": 90.0}, arch=VIT, name="dino_s16.pth", fp="1"),
        _record("knn", "dino", {"top1": 10.0}, arch=VIT, name="dino_s16.pth", fp="2",
                reasons=("miniature data", "--quick")),
        _record("semisup", "byol", {"top1": 55.0, "top5": 80.0}, family="byol", name="byol.pth", fp="3",
                preset_settings={"label_fraction": 0.01}),
        _record("transfer", "simclr", {"food101": 70.0, "aircraft": 50.0, "mean": 60.0}, family="simclr",
                name="simclr.pth", fp="4"),
    ])
    (res / "runs" / "broken.json").write_text("{not json")      # skipped with a warning, not fatal
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CHECKPOINTS_YAML", str(root / "checkpoints.yaml"))
        yield bench.results.load(res), bench.reference.load()


def test_one_row_per_metric_on_the_leaderboard_grid(frames):
    measured, _ = frames
    assert list(measured.columns) == list(bench.results.COLUMNS)
    # knn 2 + 1 metrics, semisup 2 (label fraction in the column), transfer 2 datasets (mean is not a dataset)
    assert len(measured) == 3 + 2 + 2
    knn = measured[measured.protocol == "knn"].set_index(["fingerprint", "metric"])["value"]
    assert knn[("1000000000000000", "top1")] == 76.0 and knn[("1000000000000000", "top5")] == 90.0
    semi = measured[measured.protocol == "semisup"]
    assert sorted(semi.metric) == ["top1@1%", "top5@1%"]
    transfer = measured[measured.protocol == "transfer"].set_index("dataset")
    assert transfer.loc["food101", "value"] == 70.0 and transfer.loc["aircraft", "metric"] == "mean_per_class_acc"
    mini = measured[measured.fingerprint == "2000000000000000"].iloc[0]
    assert not mini.comparable and mini.reasons == "miniature data; --quick" and mini.setting == "miniature"
    assert measured[measured.fingerprint == "1000000000000000"].comparable.all()
    assert set(measured.record) == {f"r{i:02d}.json" for i in range(4)}
    assert set(measured.method[measured.protocol == "knn"]) == {"DINO"}       # through checkpoints.yaml


def test_reference_frame_is_every_documented_number(frames):
    _, documented = frames
    assert list(documented.columns) == list(bench.results.COLUMNS)
    row = documented[(documented.source == "dino_linear_knn") & (documented.method == "DINO")
                     & (documented.arch == "ViT-S") & (documented.protocol == "knn") & (documented.metric == "top1")]
    csv_value = next(r["value"] for r in reference_table("dino_linear_knn")
                     if (r["method"], r["arch"], r["protocol"], r["metric"]) == ("DINO", "ViT-S", "knn", "top1"))
    assert len(row) == 1 and row.value.iloc[0] == float(csv_value) and row.preset.iloc[0] == "dino"
    paper = next(r["source_paper"] for r in reference_index() if r["file"] == "dino_linear_knn.csv")
    assert row.paper.iloc[0] == paper
    assert documented.value.notna().all() and documented.comparable.all()


def test_join_gives_the_tables_delta(frames):
    """The README's notebook example: measured − documented by joining the two frames."""
    measured, documented = frames
    doc = documented[(documented.source == "dino_linear_knn") & (documented.arch_key == "vit-s")]
    joined = measured[measured.comparable].merge(doc, on=["protocol", "dataset", "metric", "method_key"],
                                                 suffixes=("", "_paper"))
    joined["delta"] = joined.value - joined.value_paper
    top1 = joined[joined.metric == "top1"]
    csv_value = next(r["value"] for r in reference_table("dino_linear_knn")
                     if (r["method"], r["arch"], r["protocol"], r["metric"]) == ("DINO", "ViT-S", "knn", "top1"))
    assert top1.delta.tolist() == [pytest.approx(76.0 - float(csv_value))]


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(BenchError, match="no runs/ folder"):
        bench.results.load(tmp_path / "nope")
