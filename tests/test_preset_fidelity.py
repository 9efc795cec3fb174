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


@pytest.mark.parametrize("name, percent", [("simclr", 1), ("simclr", 10), ("simclrv2", 10)])
def test_semisup_simclr_lr_decays_as_simclrs_cosine_without_warmup(name, percent):
    import math
    from bench.protocols.semisup import SemisupPreset, effective_preset
    from bench.train import lr_at, scaled_lr
    preset = effective_preset(resolve_preset("semisup", SemisupPreset, name)[0], percent)
    bs, n = preset.batch_size, preset.batch_size * 7        # 7 full steps per epoch
    lr = scaled_lr(preset.base_lr, bs, preset.lr_scaling)
    total = n * preset.epochs // bs + 1                     # simclr get_train_steps
    for step in range(0, 7 * preset.epochs, 11):
        # model_util.learning_rate_schedule: warmup_steps = 0, so tf.train.cosine_decay(scaled_lr, step, total)
        want = 0.5 * lr * (1 + math.cos(math.pi * min(step, total) / total))
        got = lr_at(preset.schedule, step / 7, base_lr=lr, epochs=preset.epochs, warmup_epochs=preset.warmup_epochs)
        assert got == pytest.approx(want, abs=lr * 1e-2)
    assert lr_at(preset.schedule, 0.0, base_lr=lr, epochs=preset.epochs) == lr


def _tf_centre_crop(img, fraction, side_of):
    # byol dataset.py _decode_and_center_crop / simclr data_util.py center_crop (aspect 1): side from the short
    # side, offsets ((H - side) + 1) // 2, then a bicubic resize of the square to 224 x 224
    import numpy as np
    from PIL import Image
    a = np.asarray(img)
    h, w = a.shape[:2]
    side = side_of(fraction * min(h, w))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    return Image.fromarray(a[top:top + side, left:left + side]).resize((224, 224), Image.BICUBIC)


@pytest.mark.parametrize("protocol, name", [("linear", "byol"), ("linear", "simclr"), ("semisup", "simclr"),
                                            ("semisup", "simclrv2"), ("semisup", "byol")])
def test_tf_recipes_evaluate_on_the_central_87_5_percent_resized_to_224(protocol, name):
    import importlib
    import numpy as np
    from PIL import Image
    from bench.data import build_eval_transform
    from bench.runner import RunContext
    cls = {"linear": "bench.protocols.linear:LinearPreset", "semisup": "bench.protocols.semisup:SemisupPreset"}
    mod, attr = cls[protocol].split(":")
    preset, _ = resolve_preset(protocol, getattr(importlib.import_module(mod), attr), name)
    pre = SimpleNamespace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    ctx = RunContext(dataset="imagenet", backbone=SimpleNamespace(preprocessing=pre))
    spec = ctx.transform_spec({**preset.eval_transform, "mean": None, "std": None})
    tf = build_eval_transform(spec)
    # BYOL: tf.cast(float, int32) truncates; SimCLR: tf.rint rounds half to even (np.rint)
    side_of = (lambda v: int(v)) if name == "byol" else (lambda v: int(np.rint(v)))
    rng = np.random.default_rng(0)
    for h, w in ((375, 500), (500, 333), (256, 257), (99, 64)):     # 0.875 x 500 = 437.5: floor and rint differ
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        want = torch.from_numpy(np.asarray(_tf_centre_crop(img, 0.875, side_of)).copy()).permute(2, 0, 1) / 255
        assert torch.equal(tf(img), want)
    assert preset_version(protocol, name) >= 2


def test_byol_train_crop_is_one_clamped_draw_without_retries():
    import math
    from bench.augment import _crop_class
    from bench.protocols.linear import LinearPreset
    preset, _ = resolve_preset("linear", LinearPreset, "byol")
    crop = _crop_class(preset.train_transform["crop"])
    scale, ratio = tuple(preset.train_transform["scale"]), tuple(preset.train_transform["ratio"])
    assert scale == (0.08, 1.0) and ratio == pytest.approx((3 / 4, 4 / 3))
    # a 400 x 30 image is so wide that most draws do not fit: BYOL clamps them, never retries
    for seed in range(200):
        torch.manual_seed(seed)
        got = crop.get_params(torch.zeros(3, 30, 400), scale, ratio)
        # byol dataset.py _decode_and_random_crop, drawing from the same stream: area, log-ratio, offsets
        torch.manual_seed(seed)
        area = 30 * 400 * torch.empty(1).uniform_(0.08, 1.0).item()
        aspect = math.exp(torch.empty(1).uniform_(math.log(ratio[0]), math.log(ratio[1])).item())
        w, h = min(round(math.sqrt(area * aspect)), 400), min(round(math.sqrt(area / aspect)), 30)
        top = torch.randint(0, 30 - h + 1, size=(1,)).item()
        left = torch.randint(0, 400 - w + 1, size=(1,)).item()
        assert got == (top, left, h, w)


def _seg_preset(name, **over):
    import dataclasses
    from bench.protocols.segmentation import SegPreset
    preset, _ = resolve_preset("segmentation", SegPreset, name)
    return dataclasses.replace(preset, **over)


def test_segmentation_linear_ibot_is_a_1x1_conv_on_the_concat_without_norm():
    from bench.backbones import load_backbone
    from bench.protocols.segmentation import build_seg_model
    p = _seg_preset("linear-ibot", out_indices=(1, 2, 3, 5), num_classes=7)   # test_vit has 6 blocks
    model = build_seg_model(load_backbone(None, "test_vit"), p, crop=32, channels=16).train()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.decode.modules())
    with torch.no_grad():
        model.decode.conv_seg.bias.normal_()
        x = torch.randn(2, 3, 32, 32)
        maps = model.features(x)
        # mmseg FCNHead(num_convs=0, concat_input=False, dropout_ratio=0), input_transform='resize_concat':
        # every map bilinearly resized (align_corners=False) to the first's size, concatenated, then conv_seg
        cat = torch.cat([F.interpolate(m, size=maps[0].shape[2:], mode="bilinear", align_corners=False)
                         for m in maps], 1)
        want = F.conv2d(cat, model.decode.conv_seg.weight, model.decode.conv_seg.bias)
        torch.testing.assert_close(model(x)[0], want)
    assert cat.shape[1] == 4 * 64 and preset_version("segmentation", "linear-ibot") >= 2
    dinov2 = build_seg_model(load_backbone(None, "test_vit"), _seg_preset("linear", num_classes=7), crop=32,
                             channels=16)
    assert isinstance(dinov2.decode.bn, torch.nn.BatchNorm2d), "DINOv2's BNHead keeps its BatchNorm"


def test_segmentation_upernet_mae_adds_trainable_layer_scale_from_one():
    from bench.backbones import load_backbone
    from bench.protocols.segmentation import build_seg_model
    from bench.segmentation.optim import layer_decay_groups
    p = _seg_preset("upernet-mae", out_indices=(1, 2, 3, 5), channels=16, drop_path=0.0)
    model = build_seg_model(load_backbone(None, "test_vit"), p, crop=32, channels=16).eval()
    vit = model.features.model
    for blk in vit.blocks:
        for ls in (blk.ls1, blk.ls2):
            assert ls.gamma.requires_grad and torch.equal(ls.gamma, torch.ones_like(ls.gamma))
    # mmseg LayerDecayOptimizerConstructor: 1-D parameters undecayed, `layers.i.*` at layer id i + 1
    groups = layer_decay_groups(vit, torch.nn.Linear(1, 1), 0.05, 0.65)
    for i, blk in enumerate(vit.blocks):
        g = next(g for g in groups if any(q is blk.ls1.gamma for q in g["params"]))
        assert g["weight_decay"] == 0.0 and g["layer_id"] == i + 1
    # mmseg MAE layer: x = x + drop_path(gamma_1 * attn(ln1(x))); x = x + drop_path(gamma_2 * ffn(ln2(x)))
    blk = vit.blocks[0]
    with torch.no_grad():
        blk.ls1.gamma.fill_(2.0)
        blk.ls2.gamma.uniform_(0, 1)
        t = torch.randn(2, 5, 64)
        h = t + 2.0 * blk.attn(blk.norm1(t))
        torch.testing.assert_close(blk(t), h + blk.ls2.gamma * blk.mlp(blk.norm2(h)))
    assert preset_version("segmentation", "upernet-mae") >= 2
