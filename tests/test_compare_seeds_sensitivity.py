"""--seeds N, `bench compare` and `bench sensitivity` end to end on small inputs."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _features(folder: Path, noise: float, n_train: int = 300, n_val: int = 200) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 12)) * 2
    for split, n, seed in (("train", n_train, 1), ("val", n_val, 2)):
        y = np.random.default_rng(seed).integers(0, 6, n)
        x = centres[y] + noise * np.random.default_rng(seed + 10).normal(size=(n, 12))
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"{split}.npz", features=x.astype(np.float32), labels=y)
    return folder


def _ctx(features: Path, **kw):
    from bench.runner import RunContext
    return RunContext(dataset="imagenet", features_dir=features, **kw)


def test_seeds_record_holds_every_seed_and_their_mean(tmp_path):
    from bench.runner import run_protocol
    feats = _features(tmp_path / "f", noise=2.5)
    one, _, _ = run_protocol("linear", _ctx(feats, quick=True), preset="fast", out_dir=tmp_path / "o")
    rec, _, _ = run_protocol("linear", _ctx(feats, quick=True, seeds=3), preset="fast", out_dir=tmp_path / "o")
    block = rec["seeds"]
    assert block["seeds"] == [0, 1, 2] and len(block["per_seed"]) == 3
    top1 = np.array([p["metrics"]["top1"] for p in block["per_seed"]])
    assert rec["metrics"]["top1"] == pytest.approx(top1.mean())
    assert block["std"]["top1"] == pytest.approx(top1.std(ddof=1))
    assert block["per_seed"][0]["metrics"]["top1"] == pytest.approx(one["metrics"]["top1"])   # seed 0 = the 1-seed run
    assert rec["run_id"] != one["run_id"] and "seeds" not in one["run_key"]
    iv = rec["intervals"]["top1"]
    assert iv["lo"] <= rec["metrics"]["top1"] <= iv["hi"]


def test_seeds_refused_where_every_seed_gives_the_same_number(tmp_path):
    from bench.errors import BenchError
    from bench.runner import run_protocol
    with pytest.raises(BenchError, match="deterministic"):
        run_protocol("knn", _ctx(_features(tmp_path / "f", 1.0), seeds=2), out_dir=tmp_path / "o")


def test_detection_trials_is_the_seeds_flag():
    from bench.commands.run import _seeds
    from bench.errors import BenchError
    options = {"trials": 1, "backend": "torchvision"}
    assert _seeds(SimpleNamespace(seeds=5), options) == 1 and options["trials"] == 5
    assert _seeds(SimpleNamespace(seeds=1), {"trials": 5}) == 1
    with pytest.raises(BenchError, match="disagree"):
        _seeds(SimpleNamespace(seeds=3), {"trials": 5})
    assert _seeds(SimpleNamespace(seeds=4), {}) == 4


def test_every_frozen_protocol_record_carries_intervals(tmp_path):
    from bench.runner import run_protocol
    import shutil
    feats = _features(tmp_path / "f", noise=2.0)
    cifar = tmp_path / "c"   # the SVM preset's CIFAR-10 split names
    cifar.mkdir()
    shutil.copy(feats / "train.npz", cifar / "trainval.npz")
    shutil.copy(feats / "val.npz", cifar / "test.npz")
    for protocol, preset in (("knn", None), ("logreg", None), ("svm", "instdisc_cifar10"), ("linear", "fast")):
        folder = cifar if protocol == "svm" else feats
        rec, _, _ = run_protocol(protocol, _ctx(folder, quick=True), preset=preset, out_dir=tmp_path / "o")
        for name in rec["headline"][:1]:
            iv = rec["intervals"][name]
            assert iv["lo"] <= rec["metrics"][name] <= iv["hi"] and iv["n"] == 200, protocol


def test_compare_cli_verdict_written_and_refusal(tmp_path, capsys):
    out = tmp_path / "o"
    a, b = _features(tmp_path / "a", 1.0), _features(tmp_path / "b", 3.0)
    for f in (a, b):
        assert run_cli("run", "--protocol", "knn", "--features", f, "--out", out) == 0
    ra, rb = sorted((out / "runs").glob("knn__*features-a*.json")) + sorted((out / "runs").glob("knn__*features-b*"))
    capsys.readouterr()
    assert run_cli("compare", ra, rb, "--results", out, "--write") == 0
    text = capsys.readouterr().out
    assert "is better than" in text and "McNemar mid-p" in text
    stored = json.loads(next((out / "compare").glob("*.json")).read_text())
    assert stored["a"]["value"] > stored["b"]["value"] and stored["interval"]["lo"] > 0
    assert "features-tmp" in (out / "compare" / "index.md").read_text() or "| knn |" in (out / "compare" / "index.md").read_text()
    # a record of the miniatures is never compared with one of real data
    rec = json.loads(rb.read_text())
    rec["dataset"]["mini"] = True
    other = tmp_path / "mini.json"
    other.write_text(json.dumps(rec))
    assert run_cli("compare", ra, other, "--results", out) == 2
    assert "not comparable: other miniature vs real data" in capsys.readouterr().err


def test_sensitivity_variants():
    from bench.protocols.knn import KnnPreset
    from bench.protocols.logreg import LogregPreset
    from bench.sensitivity import variants
    norm = (0.485, 0.456, 0.406, 0.229, 0.224, 0.225)
    vit = variants("knn", KnnPreset(), vit=True, paper_feature="output", paper_size=64, default_norm=norm)
    assert vit[0].paper and sum(v.paper for v in vit) == 1
    assert {v.feature_mode for v in vit if v.axis == "feature"} == {"cls-prenorm", "avgpool", "cls+avgpool",
                                                                      "last4-cls"}
    assert {v.resolution for v in vit if v.axis == "input size"} == {80, 96}
    assert {v.label for v in vit if v.axis == "k"} == {"10", "100", "200"}   # 20 is the paper's
    assert {v.label for v in vit if v.axis == "normalisation"} == {"0.5", "clip"}
    cnn = variants("logreg", LogregPreset(), vit=False, paper_feature=None, paper_size=None, default_norm=norm)
    assert not any(v.axis == "feature" for v in cnn)
    assert [v.overrides["c_num"] for v in cnn if v.axis == "C grid"] == [1, 1, 1]


def test_sensitivity_sweep_writes_table_plot_and_fingerprints(tmp_path, mini_root, monkeypatch):
    from bench import sensitivity
    from bench.sensitivity_report import write_sweep
    from test_linear import _tiny_ctx
    picked = [sensitivity.Variant("paper", "as published"), sensitivity.Variant("k", "10", {"headline_k": 10}),
              sensitivity.Variant("crop ratio", "1", {"transform": {"resize": 224, "crop": 224,
                                                                     "interpolation": "bicubic"}})]
    monkeypatch.setattr(sensitivity, "variants", lambda *a, **k: picked)
    ctx = _tiny_ctx(mini_root, tmp_path / "cache")
    ctx.quick = False
    sweep = sensitivity.run_sweep(ctx, "knn", preset=None, ckpt_name="tiny", out_dir=tmp_path / "o")
    assert [p["paper"] for p in sweep["points"]] == [True, False, False]
    assert len({p["fingerprint"] for p in sweep["points"]}) == 3 and all(p["interval"] for p in sweep["points"])
    vals = [p["value"] for p in sweep["points"]]
    assert sweep["spread"]["all"]["spread"] == pytest.approx(max(vals) - min(vals))
    assert all("bench run --protocol knn" in p["command"] for p in sweep["points"])
    paths = write_sweep(sweep, tmp_path / "o")
    assert {p.suffix for p in paths} >= {".json", ".md", ".png", ".svg"}
    md = next(p for p in paths if p.suffix == ".md").read_text()
    assert "**paper**" in md and "spread" in md
    assert (tmp_path / "o" / "sensitivity" / "runs").is_dir() and (tmp_path / "o" / "runs").is_dir()
    from bench.site import write_site
    site = write_site(tmp_path / "o")
    assert "Protocol sensitivity" in (site / "index.html").read_text()
    assert (site / "sensitivity" / "index.html").is_file()


def test_cls_prenorm_is_the_last_block_cls_before_the_final_norm():
    import timm
    import torch
    from bench.backbones.features import compute_features
    m = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32).eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        h = m.blocks(m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x)))))
        assert torch.allclose(compute_features(m, x, "cls-prenorm"), h[:, 0], atol=1e-5)
        assert torch.allclose(compute_features(m, x, "cls"), m.norm(h)[:, 0], atol=1e-5)
        assert not torch.allclose(h[:, 0], m.norm(h)[:, 0], atol=1e-3)


def test_report_names_from_records_stay_in_their_cell_and_their_folder(tmp_path):
    """Names in a comparison or sweep come from records (untrusted): file names pass bench._text.safe_name, Markdown
    cells bench._text.md_escape, and nothing is written outside RESULTS/compare or RESULTS/sensitivity."""
    from bench.comparison_report import comparison_markdown, write_comparison
    from bench.sensitivity_report import sweep_markdown, sweep_name
    side = {"who": "../../evil | x\ny", "run_id": "r|1", "value": 50.0, "interval": [49.0, 51.0]}
    c = {"protocol": "knn", "preset": "dino", "dataset": "imagenet", "mini": True, "metric": "top1", "n": 10,
         "a": side, "b": dict(side, who="b"), "difference": 1.0, "p_value": 0.5, "p_bootstrap": 0.5,
         "interval": {"lo": -1.0, "hi": 2.0, "resamples": 100}, "test": "McNemar", "verdict": "no | difference",
         "significant": False}
    md = comparison_markdown(c)
    row = next(ln for ln in md.splitlines() if ln.startswith("| A |"))
    assert row.replace("\\|", "").count("|") == 5 and "\\| x y" in row
    written = write_comparison(c, {"protocol": "knn", "preset": "dino", "dataset": {"name": "imagenet"}},
                               tmp_path / "results")
    assert all((tmp_path / "results" / "compare") in p.parents for p in written)
    s = {"protocol": "knn", "preset": "dino", "checkpoint_name": "../x|y", "dataset": "imagenet", "mini": True,
         "metric": "top1", "spread": {}, "points": [{"axis": "k|T", "label": "<b>", "paper": False, "value": 1.0}]}
    assert "/" not in sweep_name(s) and "<b>" not in sweep_markdown(s) and "k\\|T" in sweep_markdown(s)
