"""layers protocol: VISSL's pooling grids, the taps read the conv/res outputs, heads trained together = alone,
hand-worked accuracies on per-layer feature files, and a miniature run whose row reaches layers__imagenet."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from bench.cache import FeatureSet, save_feature_split
from bench.presets import load_protocol_yaml
from bench.protocols.layers import _LayerTap, layer_modules, pool_layer, train_layer_heads
from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# VISSL's eval_mlp input dims (eval_alexnet_8gpu_transfer_in1k_linear.yaml / eval_resnet_8gpu_...yaml HEAD.PARAMS),
# with the channels of the Caffe AlexNet (96, 256, 384, 384, 256) and of ResNet-50 (64, 256, 512, 1024, 2048)
VISSL_DIMS = {"alexnet": ([96, 256, 384, 384, 256], [55, 27, 13, 13, 13], [9600, 9216, 9600, 9600, 9216]),
              "resnet": ([64, 256, 512, 1024, 2048], [112, 56, 28, 14, 7], [9216, 9216, 8192, 9216, 8192])}


@pytest.mark.parametrize("preset,kind,names", [("goyal2019_alexnet", "alexnet", None),
                                               ("goyal2019", "resnet", None), ("instdisc", "resnet", None)])
def test_preset_pools_give_vissl_dims_at_224(preset, kind, names):
    cfg = load_protocol_yaml("layers")["presets"][preset]
    channels, sizes, dims = VISSL_DIMS[kind]
    for name, c, hw, dim in zip(cfg["layers"], channels, sizes, dims):
        spec = cfg["pool"][kind][name]
        x = torch.randn(1, c, hw, hw)
        out, fixed = pool_layer(x, spec)
        assert fixed and out.shape[1] == dim, (preset, name)
        k, s, p, _ = spec     # the fixed pool is nn.AvgPool2d's (count_include_pad as the default)
        torch.testing.assert_close(out, nn.AvgPool2d(k, s, p)(x).flatten(1))


def test_off_size_map_pools_adaptively_to_the_same_grid():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    out, fixed = pool_layer(x, [19, 4, 0, 2])       # an 8×8 map is smaller than the kernel
    assert not fixed
    want = x.view(1, 2, 2, 4, 2, 4).mean((3, 5)).flatten(1)   # 2×2 grid of 4×4 blocks, worked by reshaping
    torch.testing.assert_close(out, want)


def test_taps_read_alexnet_relu_and_resnet_stage_outputs():
    from bench.backbones._build import create_model
    torch.manual_seed(0)
    alex, _ = create_model("tv:alexnet")
    alex.eval()
    x = torch.randn(2, 3, 224, 224)
    kind, mods = layer_modules(alex, ("conv1", "conv3", "conv5"))
    pools = {"conv1": [19, 4, 0, 10], "conv3": [9, 1, 0, 5], "conv5": [8, 1, 0, 6]}
    with torch.no_grad():
        got = _LayerTap(alex, mods, pools).features(x)
        f = alex.features   # conv, relu, pool, conv, relu, pool, conv, relu, conv, relu, conv, relu, pool
        want = torch.cat([nn.AvgPool2d(19, 4)(f[:2](x)).flatten(1), nn.AvgPool2d(9, 1)(f[:8](x)).flatten(1),
                          nn.AvgPool2d(8, 1)(f[:12](x)).flatten(1)], 1)
    assert kind == "alexnet"
    torch.testing.assert_close(got, want)
    res, _ = create_model("resnet18")
    res.eval()
    x = torch.randn(2, 3, 64, 64)
    kind, mods = layer_modules(res, ("conv1", "res3"))
    with torch.no_grad():
        got = _LayerTap(res, mods, {"conv1": [1, 1, 0, 32], "res3": [1, 1, 0, 8]}).features(x)
        stem = res.act1(res.bn1(res.conv1(x)))
        want = torch.cat([stem.flatten(1), res.layer2(res.layer1(res.maxpool(stem))).flatten(1)], 1)
    assert kind == "resnet"
    torch.testing.assert_close(got, want)


def test_heads_trained_together_equal_heads_trained_alone():
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(60, 5)).astype(np.float32), rng.normal(size=(60, 3)).astype(np.float32)
    y = rng.integers(0, 4, 60)
    gen = torch.Generator().manual_seed(1)
    h1 = (torch.randn(5, 4, generator=gen), torch.randn(4, generator=gen))
    h2 = (torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen))
    kw = dict(num_classes=4, epochs=3, batch_size=16, lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3,
              milestones=(2,), seed=0)
    both = train_layer_heads([x1, x2], y, init=[h1, h2], **kw)
    alone = train_layer_heads([x1], y, init=[h1], **kw) + train_layer_heads([x2], y, init=[h2], **kw)
    for (Wa, ba), (Wb, bb) in zip(both, alone):
        torch.testing.assert_close(Wa, Wb)
        torch.testing.assert_close(ba, bb)
    # and one head is torch's own SGD on nn.Linear with the same batches and lr steps
    lin = nn.Linear(5, 4)
    with torch.no_grad():
        lin.weight.copy_(h1[0].T)
        lin.bias.copy_(h1[1])
    opt = torch.optim.SGD(lin.parameters(), lr=0.5, momentum=0.9, nesterov=True, weight_decay=1e-3)
    order = torch.Generator().manual_seed(0)
    xt, yt = torch.as_tensor(x1), torch.as_tensor(y)
    for epoch in range(3):
        for g in opt.param_groups:
            g["lr"] = 0.5 * (0.1 if epoch >= 2 else 1.0)
        perm = torch.randperm(60, generator=order)
        for s in range(0, 60, 16):
            opt.zero_grad()
            nn.functional.cross_entropy(lin(xt[perm[s:s + 16]]), yt[perm[s:s + 16]]).backward()
            opt.step()
    torch.testing.assert_close(both[0][0], lin.weight.detach().T)


@pytest.fixture(scope="module")
def layer_feature_dir(tmp_path_factory):
    """Per-layer feature files with hand-known answers: conv1 is constant (only the class prior is learnable: train
    is 70 % class 0, so every val image is called class 0 and top-1 is val's class-0 share, 50 %); conv2 holds the
    one-hot label (separable: 100 %)."""
    root = tmp_path_factory.mktemp("layerfeats")
    rng = np.random.default_rng(0)
    ytr = np.array([0] * 70 + [1] * 10 + [2] * 10 + [3] * 10)
    yva = np.array([0] * 20 + [1] * 8 + [2] * 6 + [3] * 6)
    for split, y in (("train", ytr), ("val", yva)):
        save_feature_split(root / "conv1", split, FeatureSet(np.ones((len(y), 6), np.float32), y))
        onehot = np.eye(4, dtype=np.float32)[y] * 3 + rng.normal(0, 0.05, (len(y), 4)).astype(np.float32)
        save_feature_split(root / "conv2", split, FeatureSet(onehot, y))
    return root


def test_per_layer_accuracies_match_hand_worked_values(layer_feature_dir, tmp_path):
    out = tmp_path / "res"
    assert run_cli("run", "--protocol", "layers", "--preset", "zhang2017", "--features", layer_feature_dir,
                   "--set", "layers=[conv1,conv2]", "--set", "epochs=10", "--set", "batch_size=20",
                   "--set", "base_lr=1.0", "--out", out) == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    m = rec["metrics"]
    assert m["top1_conv1"] == pytest.approx(50.0) and m["top1_conv2"] == pytest.approx(100.0)
    assert m["top1_best"] == m["top1_conv2"] and rec["details"]["best_layer"] == "conv2"
    assert m["top5_conv1"] == pytest.approx(100.0)      # 4 classes: every label is in the top 5


def test_miniature_run_writes_a_row_in_the_layers_table(mini_root, tmp_path):
    out = tmp_path / "res"
    assert run_cli("run", "--protocol", "layers", "--preset", "instdisc", "--model", "resnet18", "--quick",
                   "--data-root", mini_root, "--resolution", 32, "--out", out) == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert set(rec["metrics"]) >= {f"top1_conv{i}" for i in range(1, 6)}
    inputs = rec["fingerprint_settings"]["inputs"]["imagenet/train"]
    assert inputs["kind"] == "resnet" and inputs["adaptive_pool"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    # the second run reads every layer from the cache
    assert run_cli("run", "--protocol", "layers", "--preset", "instdisc", "--model", "resnet18", "--quick",
                   "--data-root", mini_root, "--resolution", 32, "--out", out, "--force") == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert rec["inputs"]["imagenet/val"]["cache_hit"] is True          # recorded, not part of the fingerprint
    assert run_cli("table", "--results", out, "--no-plots") == 0
    table = (out / "layers__imagenet.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| measured"))
    assert f"{rec['metrics']['top1_conv5']:.2f}" in row and "not compared: miniature data; --quick" in row
    assert "alexnet_conv_layers_feng2019" in table and "instdisc_imagenet_conv_layers_knn" in table


def test_layer_files_of_other_images_are_refused(layer_feature_dir, tmp_path, capsys):
    import shutil
    bad = tmp_path / "feats"
    shutil.copytree(layer_feature_dir, bad)
    fs = np.load(bad / "conv2" / "val.npz")
    save_feature_split(bad / "conv2", "val", FeatureSet(fs["features"], fs["labels"][::-1].copy()))
    assert run_cli("run", "--protocol", "layers", "--preset", "zhang2017", "--features", bad,
                   "--set", "layers=[conv1,conv2]", "--out", tmp_path / "res") == 2
    assert "layers ['conv2'] have other labels" in capsys.readouterr().err
