"""Presets as the papers' code (issue 24): each expected value is rebuilt from a restatement of the cited source,
not from bench; preset versions reach the record, the fingerprint, the table and `bench list presets`."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bench.errors import PresetError
from bench.presets import preset_version, resolve_preset


@pytest.fixture(scope="module")
def tiny_vit():
    import timm
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32).eval()


@pytest.fixture(scope="module")
def tiny_resnet():
    import timm
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=0).eval()


def _dino_vit_forward(vit, x):
    # dino vision_transformer.py VisionTransformer.forward: prepare_tokens (patch embed, cls, + pos), blocks,
    # norm, return x[:, 0] -- what eval_knn.py:105 `model(samples)` stores.
    t = vit.patch_embed(x)
    t = torch.cat([vit.cls_token.expand(len(t), -1, -1), t], dim=1) + vit.pos_embed
    for blk in vit.blocks:
        t = blk(t)
    return vit.norm(t)[:, 0]


def _resnet_forward(net, x):
    # torchvision/timm ResNet with fc = Identity: global average pool of the last stage
    return net.forward_features(x).mean((2, 3))


@pytest.mark.parametrize("protocol, cls_path, name", [("knn", "bench.protocols.knn:KnnPreset", "dino"),
                                                      ("logreg", "bench.protocols.logreg:LogregPreset", "dinov2")])
def test_knn_dino_and_logreg_dinov2_read_the_final_cls_not_the_linear_probe_feature(protocol, cls_path, name,
                                                                                      tiny_vit, tiny_resnet):
    import importlib
    from bench.backbones.features import compute_features
    from bench.runner import RunContext
    mod, cls = cls_path.split(":")
    preset, _ = resolve_preset(protocol, getattr(importlib.import_module(mod), cls), name)
    # the preset's mode wins over a DINO backbone's linear-probe default (last4-cls, 4 x 192-d here)
    ctx = RunContext(dataset="imagenet", backbone=SimpleNamespace(feature_mode="last4-cls"))
    mode = ctx.resolve_feature_mode(preset.feature_mode)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        vit_feat, cnn_feat = compute_features(tiny_vit, x, mode), compute_features(tiny_resnet, x, mode)
        assert vit_feat.shape == (3, 192)
        torch.testing.assert_close(vit_feat, _dino_vit_forward(tiny_vit, x), rtol=0, atol=1e-5)
        torch.testing.assert_close(cnn_feat, _resnet_forward(tiny_resnet, x), rtol=0, atol=1e-5)
    assert preset_version(protocol, name) >= 2     # v1 read the backbone's own mode


def test_semisup_logreg_reads_the_logreg_presets_feature(monkeypatch):
    from bench.protocols import _semisup_train
    from bench.protocols.semisup import SemisupPreset
    preset, _ = resolve_preset("semisup", SemisupPreset, "logreg")
    asked = []

    class Stop(Exception):
        pass

    def features(split, transform, *, feature_mode=None, dataset=None):
        asked.append(feature_mode)
        raise Stop
    with pytest.raises(Stop):
        _semisup_train.logreg_on_subset(SimpleNamespace(features=features), preset, None)
    assert asked == ["output"] and preset_version("semisup", "logreg") >= 2


def test_preset_version_is_yaml_only_and_refused_from_the_command_line(tmp_path, monkeypatch):
    from bench.protocols.knn import KnnPreset
    (tmp_path / "knn.yaml").write_text("protocol: knn\ndefault: a\npresets:\n  a: {version: 3, k: [5], headline_k: 5}\n"
                                       "  b: {k: [5], headline_k: 5}\n  c: {version: 0}\n")
    monkeypatch.setenv("BENCH_PROTOCOLS", str(tmp_path))
    assert preset_version("knn") == 3 and preset_version("knn", "b") == 1
    preset, _ = resolve_preset("knn", KnnPreset, "a")
    assert preset.k == (5,)
    with pytest.raises(PresetError, match="version is not a setting"):
        resolve_preset("knn", KnnPreset, "a", {"version": 4})
    with pytest.raises(PresetError, match="knn.yaml:c: version must be an integer >= 1"):
        resolve_preset("knn", KnnPreset, "c")


def test_version_enters_record_fingerprint_and_list(tmp_path, monkeypatch, capsys):
    import numpy as np
    from bench.cli import main
    rng = np.random.default_rng(0)
    feats = tmp_path / "feats"
    feats.mkdir()
    for split, n in (("train", 60), ("val", 20)):
        np.savez(feats / f"{split}.npz", features=rng.normal(size=(n, 8)).astype("float32"),
                 labels=rng.integers(0, 3, n))
    yaml_dir = tmp_path / "protocols"
    yaml_dir.mkdir()
    monkeypatch.setenv("BENCH_PROTOCOLS", str(yaml_dir))
    recs = {}
    for version in (1, 2):
        (yaml_dir / "knn.yaml").write_text(f"protocol: knn\ndefault: dino\npresets:\n  dino:\n    version: {version}\n"
                                           f"    source: 'facebookresearch/dino:eval_knn.py'\n"
                                           f"    k: [5]\n    headline_k: 5\n")
        out = tmp_path / f"out{version}"
        assert main(["run", "--protocol", "knn", "--features", str(feats), "--out", str(out)]) == 0
        (path,) = (out / "runs").glob("*.json")
        recs[version] = (path.name, json.loads(path.read_text()))
    (n1, r1), (n2, r2) = recs[1], recs[2]
    assert (r1["preset_version"], r2["preset_version"]) == (1, 2)
    assert r1["fingerprint"] != r2["fingerprint"] and n1 != n2, "an older version's record is never reused"
    assert r1["metrics"] == r2["metrics"]
    capsys.readouterr()
    assert main(["list", "presets"]) == 0
    assert capsys.readouterr().out.split() == ["knn", "*dino", "v2", "facebookresearch/dino:eval_knn.py"]


def test_a_record_of_an_older_preset_version_is_not_compared_with_the_paper():
    from bench.tables import _version_reasons
    now = preset_version("knn", "dino")
    seen = {}
    assert _version_reasons({"protocol": "knn", "preset": "dino", "preset_version": now}, seen) == ()
    assert _version_reasons({"protocol": "knn", "preset": "dino"}, seen) == (f"ran preset version 1, current is {now}",)
    assert _version_reasons({"protocol": "knn", "preset": "gone", "preset_version": 1}, seen) == \
        ("preset knn/gone no longer exists",)
