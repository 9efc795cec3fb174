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
    from bench.tables import measurements
    rec = {"protocol": "knn", "preset": "dino", "metrics": {"top1": 70.0}, "comparable": True,
           "not_comparable_because": [], "checkpoint": {"name": "m.pth", "arch": "resnet50", "family": "plain"},
           "dataset": {"name": "imagenet"}, "fingerprint": "0" * 16}
    old, new = measurements([rec]), measurements([{**rec, "preset_version": now}])
    assert old[0].reasons == (f"ran preset version 1, current is {now}",) and new[0].reasons == ()


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
    from bench.protocols._segmentation_optim import layer_decay_groups
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


def test_detection_moco_is_detectron2s_l1_roialignv2_and_precise_bn():
    from bench.protocols.detection import DetectionPreset
    p, _ = resolve_preset("detection", DetectionPreset, "moco")
    # detectron2 defaults.py: RPN.SMOOTH_L1_BETA = ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0, POOLER_TYPE ROIAlignV2,
    # TEST.PRECISE_BN.NUM_ITER 200 (ENABLED in moco's Base-RCNN-C4-BN.yaml)
    assert (p.rpn_smooth_l1_beta, p.box_smooth_l1_beta, p.roi_aligned, p.precise_bn_iters) == (0.0, 0.0, True, 200)
    assert preset_version("detection", "moco") >= 2


def test_box_losses_with_beta_zero_are_detectron2s_l1():
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
    from bench.protocols._detection_d2_parts import BetaRPN, fastrcnn_loss
    g = torch.Generator().manual_seed(0)
    # box head: 6 sampled RoIs (labels 0 = background), 3 classes + background, class-specific deltas
    logits, deltas = torch.randn(6, 4, generator=g), torch.randn(6, 16, generator=g) * 0.05   # |x| < 1/9 mostly
    labels, targets = [torch.tensor([0, 2, 1]), torch.tensor([3, 0, 2])], [torch.randn(3, 4, generator=g) * 0.05
                                                                           for _ in range(2)]
    cls_loss, box_loss = fastrcnn_loss(logits, deltas, labels, targets, beta=0.0)
    lab, tgt = torch.cat(labels), torch.cat(targets)
    # detectron2 fast_rcnn.py box_reg_loss: fvcore smooth_l1_loss(beta=0) = |x|, summed over foreground RoIs'
    # deltas of their own class, divided by the number of sampled RoIs
    want = sum((deltas[i].view(4, 4)[lab[i]] - tgt[i]).abs().sum() for i in range(6) if lab[i] > 0) / 6
    torch.testing.assert_close(box_loss, want)
    torch.testing.assert_close(cls_loss, F.cross_entropy(logits, lab))
    smooth = fastrcnn_loss(logits, deltas, labels, targets)[1]     # torchvision's 1/9
    assert smooth < box_loss
    # RPN: 10 anchors, all sampled (fewer than 256), 4 foreground; L1 over foreground deltas / sampled anchors
    rpn = BetaRPN.__new__(BetaRPN)
    torch.nn.Module.__init__(rpn)
    rpn.fg_bg_sampler, rpn.smooth_l1_beta = BalancedPositiveNegativeSampler(256, 0.5), 0.0
    obj, d = torch.randn(10, 1, generator=g), torch.randn(10, 4, generator=g) * 0.05
    lbl = [torch.tensor([1., 0., 0., 1., 0., 1., 0., 0., 1., 0.])]
    tg = [torch.randn(10, 4, generator=g) * 0.05]
    obj_loss, rpn_box = rpn.compute_loss(obj, d, lbl, tg)
    fg = lbl[0] > 0
    torch.testing.assert_close(rpn_box, (d[fg] - tg[0][fg]).abs().sum() / 10)
    torch.testing.assert_close(obj_loss, F.binary_cross_entropy_with_logits(obj.flatten(), lbl[0]))


def test_moco_detector_uses_roialignv2_and_l1_in_its_forward():
    import dataclasses
    from bench.protocols.detection import DetectionPreset
    from bench.protocols._detection_d2_parts import BetaRoIHeads, BetaRPN
    from bench.protocols._detection_model import build_detector
    from timm.models.resnet import BasicBlock, ResNet
    p = dataclasses.replace(resolve_preset("detection", DetectionPreset, "moco")[0], train_min_sizes=(64,),
                            test_size=64, max_size=96, rois_per_image=16, pooler_resolution=4,
                            rpn_pre_nms_train=50, rpn_post_nms_train=20)
    torch.manual_seed(0)
    net = ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), num_classes=0)
    model = build_detector(net, p, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert type(model.rpn) is BetaRPN and type(model.roi_heads) is BetaRoIHeads
    assert model.rpn.smooth_l1_beta == 0.0 and model.roi_heads.smooth_l1_beta == 0.0
    # ROIAlignV2 on a horizontal ramp f(x, y) = x: bilinear sampling is exact, so each bin averages to its centre;
    # aligned=True (detectron2's pixel model) shifts the box by -0.5 px: centre = x0 - 0.5 + (i + 0.5) w / n
    ramp = torch.arange(32.0).expand(1, 1, 32, 32).contiguous()
    out = model.roi_heads.box_roi_pool({"0": ramp}, [torch.tensor([[4.0, 4.0, 20.0, 12.0]])], [(32, 32)])
    want = 4.0 - 0.5 + (torch.arange(4.0) + 0.5) * 16 / 4
    torch.testing.assert_close(out[0, 0, 0], want)
    model.train()
    losses = model([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
                                              "labels": torch.tensor([3])}])
    assert all(torch.isfinite(v) for v in losses.values())
    from torchvision.models.detection import roi_heads as tv
    assert tv.fastrcnn_loss.__module__ == "torchvision.models.detection.roi_heads", "the swap is undone"


def test_precise_bn_sets_running_stats_to_the_average_of_batch_statistics(mini_root):
    import dataclasses
    from bench.data import open_dataset
    from bench.protocols.detection import DetectionPreset
    from bench.protocols._detection_engine import DetectionSamples, update_bn_stats
    from bench.protocols._detection_model import build_detector
    from timm.models.resnet import BasicBlock, ResNet
    p = dataclasses.replace(resolve_preset("detection", DetectionPreset, "moco")[0], train_min_sizes=(64,),
                            test_size=64, max_size=96, rois_per_image=16, pooler_resolution=4, batch_size=2,
                            rpn_pre_nms_train=50, rpn_post_nms_train=20, iterations=5, precise_bn_iters=3,
                            amp=False)
    torch.manual_seed(0)
    model = build_detector(ResNet(BasicBlock, [1, 1, 1, 1], channels=(8, 16, 32, 64), num_classes=0), p,
                           mean=(0.5,) * 3, std=(0.5,) * 3)
    samples = DetectionSamples([open_dataset("voc", mini_root, "2007-trainval", None, mini=True)])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = {id(bn): [] for bn in bns}
    hooks = [bn.register_forward_hook(lambda m, inp, out: seen[id(m)].append(inp[0].detach().double()))
             for bn in bns]
    momenta = [bn.momentum for bn in bns]
    info = update_bn_stats(model, samples, p, device=torch.device("cpu"), seed=0)
    for h in hooks:
        h.remove()
    assert info == {"iterations": 3, "bn_layers": len(bns)} and [bn.momentum for bn in bns] == momenta
    for bn in bns:
        # fvcore update_bn_stats: running stats = mean over the batches of each batch's mean and unbiased var
        calls = seen[id(bn)]
        assert len(calls) == 3
        mean = torch.stack([x.mean((0, 2, 3)) for x in calls]).mean(0)
        var = torch.stack([x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in calls]).mean(0)
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)
