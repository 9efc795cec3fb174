"""A released file given by path is its checkpoints.yaml entry (by sha256, else by its unique published name): the
entry's family, position-grid rule and feature apply. A DINO ViT's released backbone file is a flat timm dict whose
keys say only "a ViT"; recognised, it resamples its grid as DINO's interpolate_pos_encoding does (bicubic, +0.1
offset), which timm's rule does not. `--pos-embed-rule` sets the rule by hand and the record says so."""
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from bench import load_backbone
from bench.backbones import zoo
from bench.errors import CheckpointError
from test_pos_embed import dino_interpolate_pos_encoding, img, run_blocks, vit16


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny ViT saved as DINO publishes its backbone (a bare state dict), under a publisher-style name."""
    root = tmp_path_factory.mktemp("release")
    m = vit16()
    torch.save(m.state_dict(), root / "dino_tiny16_pretrain.pth")
    return root / "dino_tiny16_pretrain.pth", m


@pytest.fixture
def registry(tmp_path, monkeypatch):
    def write(extra=""):
        (tmp_path / "checkpoints.yaml").write_text(
            "checkpoints:\n  - {name: dino_tiny16, url: 'https://x.invalid/dino/dino_tiny16_pretrain.pth', "
            "family: dino, layout: flat, feature_mode: cls}\n" + extra)
    write()
    monkeypatch.setattr(zoo, "registry_path", lambda: tmp_path / "checkpoints.yaml")
    return write


def _dino_reference(m, x):
    with torch.no_grad():
        return run_blocks(m, x, lambda t, w_, h_: dino_interpolate_pos_encoding(m.pos_embed, t, w_, h_, 16),
                          cls=m.cls_token)


def _features(bb, x):
    with torch.no_grad():
        return bb.model.forward_features(x)


def test_released_file_by_name_gets_dinos_rule_at_two_sizes(release, registry):
    path, m = release
    bb = load_backbone(path, "from-keys")
    rep = bb.report
    assert (rep.registry_name, rep.family, rep.pos_embed_rule, rep.feature_mode) == ("dino_tiny16", "dino", "dino",
                                                                                    "cls")
    assert any("recognised as checkpoints.yaml dino_tiny16 by its file name" in n for n in rep.notes)
    assert bb.weights_id.endswith(":pos-dino")
    for side in (48, 96):                          # 3×3 and 6×6 grids off the stored 4×4 (DINO's 160 px on 224)
        x = img(side, side, seed=side)
        torch.testing.assert_close(_features(bb, x), _dino_reference(m, x), rtol=1e-5, atol=1e-5)
    timms = load_backbone(path, "from-keys", pos_embed_rule="timm")   # the same file read with timm's rule
    x = img(48, 48)
    assert (_features(timms, x) - _features(bb, x)).abs().max() > 1e-3


def test_unknown_file_keeps_timms_rule_and_a_hand_set_rule_is_dinos(release, registry, tmp_path):
    path, m = release
    other = shutil.copy(path, tmp_path / "my_vit.pth")          # not a published name, sha256 not registered
    plain = load_backbone(other, "from-keys")
    assert (plain.report.registry_name, plain.report.family, plain.report.pos_embed_rule) == (None, "timm-vit",
                                                                                             "timm")
    assert not plain.report.pos_embed_rule_set
    byhand = load_backbone(other, "from-keys", pos_embed_rule="dino")
    assert byhand.report.pos_embed_rule_set and byhand.report.pos_embed_rule == "dino"
    assert any("set by --pos-embed-rule" in n for n in byhand.report.notes)
    assert byhand.weights_id != plain.weights_id
    x = img(96, 96)
    torch.testing.assert_close(_features(byhand, x), _dino_reference(m, x), rtol=1e-5, atol=1e-5)


def test_renamed_file_is_recognised_by_its_sha256(release, registry, tmp_path):
    path, _ = release
    renamed = shutil.copy(path, tmp_path / "renamed.pth")
    registry(f"  - {{name: by_sha, url: 'https://x.invalid/other.pth', sha256: '{zoo.sha256_file(path)}', "
             f"family: dino, layout: flat, feature_mode: last4-cls}}\n")
    rep = load_backbone(renamed, "from-keys").report
    assert (rep.registry_name, rep.family, rep.feature_mode) == ("by_sha", "dino", "last4-cls")
    assert any("by its sha256" in n for n in rep.notes)


def test_a_name_whose_keys_disagree_is_not_that_entry(release, tmp_path, monkeypatch):
    path, _ = release
    (tmp_path / "checkpoints.yaml").write_text(
        "checkpoints:\n  - {name: mocov3_like, url: 'https://x.invalid/dino_tiny16_pretrain.pth', family: moco-v3, "
        "layout: moco-v3}\n")
    monkeypatch.setattr(zoo, "registry_path", lambda: tmp_path / "checkpoints.yaml")
    rep = load_backbone(path, "from-keys").report
    assert rep.registry_name is None and rep.family == "timm-vit"


def test_pos_embed_rule_refusals(release, tmp_path):
    path, _ = release
    with pytest.raises(CheckpointError, match="--pos-embed-rule nope: unknown rule; choose one of .*dino"):
        load_backbone(path, "from-keys", pos_embed_rule="nope")
    import torchvision
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="no absolute position grid"):
        load_backbone(tmp_path / "r18.pth", pos_embed_rule="dino")


def test_hand_set_rule_reaches_the_record(release, registry, capsys):
    from bench.cli import main
    from bench.runner import _checkpoint_block
    path, _ = release
    bb = load_backbone(path, "from-keys", pos_embed_rule="mae")
    block = _checkpoint_block(SimpleNamespace(backbone=bb))
    assert block["pos_embed_rule"] == "mae" and block["pos_embed_rule_set"] is True
    default = _checkpoint_block(SimpleNamespace(backbone=load_backbone(path, "from-keys")))
    assert default["pos_embed_rule"] == "dino" and "pos_embed_rule_set" not in default
    assert main(["inspect", str(path), "--arch", "from-keys", "--pos-embed-rule", "timm", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["pos_embed_rule"] == "timm" and rep["pos_embed_rule_set"] and rep["registry_name"] == "dino_tiny16"

