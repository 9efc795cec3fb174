"""Semi-supervised subsets (SimCLR lists, balanced fractions) and the fine-tuning protocol on the miniature."""
import json

import numpy as np
import pytest
from torchvision.datasets import ImageFolder

from bench.cli import main
from bench.data.subsets import balanced_fraction, find_subset_file, read_subset_list, subset_indices
from bench.errors import DataError


def test_mini_lists_are_simclr_format_and_balanced(mini_root):
    samples = ImageFolder(str(mini_root / "imagenet" / "train")).samples
    for percent, expected in ((1, 14), (10, 144)):
        names = read_subset_list(mini_root / "imagenet" / f"{percent}percent.txt")
        assert len(names) == expected == round(percent / 100 * len(samples))
        idx = subset_indices(samples, names, mini_root)
        per_class = np.bincount([samples[i][1] for i in idx], minlength=10)
        assert per_class.max() - per_class.min() <= 1 and per_class.min() >= 1
        assert all(n.split("_")[0].startswith("n0000000") and n.endswith(".JPEG") for n in names)


def test_balanced_fraction_is_seeded_and_balanced():
    targets = np.repeat(np.arange(7), [30, 31, 29, 40, 33, 30, 35])
    a, b, c = (balanced_fraction(targets, 0.1, s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == round(0.1 * len(targets))
    counts = np.bincount(targets[a])
    assert counts.max() - counts.min() <= 1 and len(np.unique(a)) == len(a)


def test_wrong_count_and_missing_files_are_reported(mini_root, tmp_path):
    samples = ImageFolder(str(mini_root / "imagenet" / "train")).samples
    names = read_subset_list(mini_root / "imagenet" / "10percent.txt")
    with pytest.raises(DataError, match="lists 144 images, the official list has 128116"):
        subset_indices(samples, names, tmp_path / "10percent.txt", expected=128_116)
    broken = names[:-3] + ["n00000001_999991.JPEG", "n00000002_999992.JPEG", "n00000003_999993.JPEG"]
    with pytest.raises(DataError, match="3 of 144 listed images are missing"):
        subset_indices(samples, broken, tmp_path / "x.txt")


def test_offline_without_a_list_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"fetch https://raw.githubusercontent.com/google-research/simclr/.*1percent"):
        find_subset_file(1, tmp_path / "data", tmp_path / "cache", download=False)


def _run(mini_root, out, *extra):
    return main(["run", "--protocol", "semisup", "--data-root", str(mini_root), "--model", "resnet18", "--quick",
                 "--resolution", "32", "--out", str(out), *extra])


def _record(out):
    (path,) = (out / "runs").glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("preset", ["simclr", "swav", "logreg"])
def test_presets_run_on_the_miniature(mini_root, tmp_path, preset):
    out = tmp_path / preset
    assert _run(mini_root, out, "--preset", preset, "--labels-percent", "10") == 0
    rec = _record(out)
    assert 0 <= rec["metrics"]["top1"] <= 100 and "top5" in rec["metrics"]
    sub = rec["details"]["subset"]
    assert sub["kind"] == "list" and sub["count"] == 144 and len(sub["sha256"]) == 64
    assert rec["comparable"] is False and "--quick" in rec["not_comparable_because"]
    if preset == "swav":   # SwAV's 10% values, and the best epoch is what the paper reported
        assert rec["details"]["effective_preset"]["head_lr"] == 0.2
        assert rec["details"]["paper_number_is"] == "top1_max"


def test_fraction_and_bad_list(mini_root, tmp_path, capsys):
    assert _run(mini_root, tmp_path / "f", "--preset", "logreg", "--fraction", "0.05") == 0
    assert _record(tmp_path / "f")["details"]["subset"]["count"] == round(0.05 * 1437)
    bad = tmp_path / "bad.txt"
    bad.write_text("n00000000_nope.JPEG\n")
    assert _run(mini_root, tmp_path / "b", "--subset-file", str(bad)) == 2
    assert "1 of 1 listed images are missing" in capsys.readouterr().err


def test_resume_after_interruption_matches_the_uninterrupted_run(mini_root, tmp_path, monkeypatch):
    from bench.protocols import _semisup_train
    from bench.runner import run_protocol
    from test_linear import _Stop, _tiny_ctx
    overrides = {"quick_epochs": 3}
    ref, _, _ = run_protocol("semisup", _tiny_ctx(mini_root, tmp_path / "c1"), preset="swav",
                             overrides=overrides, out_dir=tmp_path / "o1")

    def stop_after_second(epoch):
        if epoch == 1:
            raise _Stop
    monkeypatch.setattr(_semisup_train, "AFTER_EPOCH_HOOKS", [stop_after_second])
    with pytest.raises(_Stop):
        run_protocol("semisup", _tiny_ctx(mini_root, tmp_path / "c2"), preset="swav", overrides=overrides,
                     out_dir=tmp_path / "o2")
    monkeypatch.setattr(_semisup_train, "AFTER_EPOCH_HOOKS", [])
    rec, _, _ = run_protocol("semisup", _tiny_ctx(mini_root, tmp_path / "c2"), preset="swav", overrides=overrides,
                             out_dir=tmp_path / "o2")
    assert ref["details"]["resumed_from_epoch"] == 0 and rec["details"]["resumed_from_epoch"] == 2
    assert len(rec["details"]["history"]) == 3
    assert [h["train_loss"] for h in rec["details"]["history"]] == pytest.approx(
        [h["train_loss"] for h in ref["details"]["history"]], rel=1e-5)
    assert rec["metrics"] == pytest.approx(ref["metrics"])
    # SwAV reports its best epoch on val; the record says so
    assert rec["metrics"]["top1_max"] == max(h["top1"] for h in rec["details"]["history"])


def test_label_efficiency_points_cover_1_10_and_100_percent(mini_root, tmp_path):
    from bench.plots import label_efficiency_points
    from bench.runner import run_protocol
    from test_linear import _tiny_ctx
    records = []
    for percent in (1, 10, 100):
        ctx = _tiny_ctx(mini_root, tmp_path / "c")
        ctx.options = {"labels_percent": percent}
        rec, _, _ = run_protocol("semisup", ctx, preset="simclr", out_dir=tmp_path / "o")
        assert rec["details"]["subset"]["count"] == {1: 14, 10: 144, 100: 1437}[percent]
        records.append(rec)
    (line,) = label_efficiency_points(records).values()
    assert [x for x, _ in line] == [1.0, 10.0, 100.0]
    assert [y for _, y in line] == [r["metrics"]["top1"] for r in records]
    # SimCLR's per-subset epochs (60 for 1 %, 30 for 10 %) are what the record says ran
    assert [r["details"]["effective_preset"]["epochs"] for r in records[:2]] == [60, 30]
