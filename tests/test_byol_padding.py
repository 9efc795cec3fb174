"""BYOL's ResNet (Haiku) pads 'SAME'. A file from ajtejankar/byol-convert (flat torchvision keys, no
num_batches_tracked, the online classifier as fc) must give the features of byol-convert's own resnet.py, which
pads every conv and the max-pool with TF's rule; the reference below re-states that forward pass with F.conv2d."""
from math import ceil

import pytest
import timm
import torch
import torch.nn.functional as F

from bench import load_backbone
from bench.backbones import zoo
from test_checkpoints import _perturbed


def calc_padding_same(in_height, in_width, strides, filter_height, filter_width):
    """byol-convert resnet.py, transcribed."""
    out_height = ceil(float(in_height) / float(strides[0]))
    out_width = ceil(float(in_width) / float(strides[1]))
    pad_along_height = max((out_height - 1) * strides[0] + filter_height - in_height, 0)
    pad_along_width = max((out_width - 1) * strides[1] + filter_width - in_width, 0)
    pad_top = pad_along_height // 2
    pad_left = pad_along_width // 2
    return (pad_left, pad_along_width - pad_left, pad_top, pad_along_height - pad_top)


def conv(x, sd, name, stride=1):
    w = sd[f"{name}.weight"]
    x = F.pad(x, calc_padding_same(*x.shape[2:], (stride, stride), *w.shape[2:]))
    return F.conv2d(x, w, stride=stride)


def bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)


def byol_convert_forward(sd, x, layers=(1, 1, 1, 1)):
    """byol-convert ResNet._forward_impl up to the average pool (Bottleneck, stride on the 3×3 conv)."""
    x = F.relu(bn(conv(x, sd, "conv1", 2), sd, "bn1"))
    x = F.max_pool2d(F.pad(x, calc_padding_same(*x.shape[2:], (2, 2), 3, 3)), 3, 2)   # zeros, after a ReLU
    for li, n in enumerate(layers, start=1):
        for b in range(n):
            p, stride = f"layer{li}.{b}", (2 if li > 1 and b == 0 else 1)
            out = F.relu(bn(conv(x, sd, f"{p}.conv1"), sd, f"{p}.bn1"))
            out = F.relu(bn(conv(out, sd, f"{p}.conv2", stride), sd, f"{p}.bn2"))
            out = bn(conv(out, sd, f"{p}.conv3"), sd, f"{p}.bn3")
            idt = bn(conv(x, sd, f"{p}.downsample.0", stride), sd, f"{p}.downsample.1") \
                if f"{p}.downsample.0.weight" in sd else x
            x = F.relu(out + idt)
    return x.mean((2, 3))


@pytest.fixture
def byol_file(tmp_path, monkeypatch):
    (tmp_path / "checkpoints.yaml").write_text(
        "checkpoints:\n  - name: tiny_byol\n    url: null\n    file: tiny_byol.pth\n    source: test\n"
        "    family: byol\n    layout: flat\n    arch: from-keys\n    feature_mode: pool\n    numbers: []\n")
    monkeypatch.setattr(zoo, "registry_path", lambda: tmp_path / "checkpoints.yaml")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    m = _perturbed(timm.create_model("resnet50", num_classes=10, layers=(1, 1, 1, 1)))
    sd = {k: v for k, v in m.state_dict().items() if "tracked" not in k}     # as byol-convert writes it
    dest = zoo.checkpoint_file(zoo.get_entry("tiny_byol"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, dest)
    return dest, sd


@pytest.mark.parametrize("size", [64, 72, 57])   # even (asymmetric pads) and odd inputs
def test_byol_convert_file_gives_byol_convert_features(byol_file, size):
    path, sd = byol_file
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    bb = load_backbone("tiny_byol")
    assert bb.report.family == "byol" and bb.report.coverage == 1.0 and bb.weights_id.endswith(":tf-same")
    with torch.no_grad():
        expected = byol_convert_forward(sd, x)
        torch.testing.assert_close(bb.features(x), expected, rtol=1e-5, atol=1e-5)
        # the published file by path is that entry (its name), so it pads as BYOL too
        by_path = load_backbone(path, "from-keys")
        assert by_path.report.registry_name == "tiny_byol" and by_path.weights_id.endswith(":tf-same")
        # renamed, nothing says it is BYOL: torchvision's symmetric padding, the silent failure
        import shutil
        plain = load_backbone(shutil.copy(path, path.with_name("renamed_resnet.pth")), "from-keys")
        assert plain.report.coverage == 1.0 and (plain.features(x) - expected).abs().max() > 1e-3


def test_same_padding_amounts_match_tf():
    from bench.backbones._padding import same_pad_amounts
    for n in (7, 8, 56, 57, 112, 224):
        for k, s in ((1, 1), (1, 2), (3, 1), (3, 2), (7, 2)):
            left, right, _, _ = calc_padding_same(n, n, (s, s), k, k)
            assert same_pad_amounts(n, k, s) == (left, right)


def _as_byol_convert_writes(sd):
    """ajtejankar/byol-convert convert.py, re-stated: each Haiku conv kernel `w` (HWIO numpy) becomes
    `torch.from_numpy(w).permute(3, 2, 0, 1)` -- a view that torch.save stores with its strides --, BN scale/offset
    are squeezed, and the dict holds every `online_params` entry before every `online_state` (mean_ema/var_ema)."""
    params, state = {}, {}
    for k, v in sd.items():
        if k.endswith(("running_mean", "running_var")):
            state[k] = v.clone()
        elif v.dim() == 4:
            params[k] = torch.from_numpy(v.permute(2, 3, 1, 0).contiguous().numpy()).permute(3, 2, 0, 1)
        else:
            params[k] = v.clone()
    return {**params, **state}


def test_byol_convert_file_by_path_is_recognised(byol_file, tmp_path):
    """No registry entry: the file alone must say it came from Haiku, or it loads with torch's padding and gives
    other features at 100% coverage."""
    _, sd = byol_file
    path = tmp_path / "pretrain_res50x1.pth.tar"
    torch.save(_as_byol_convert_writes(sd), path)
    bb = load_backbone(path, "from-keys")
    assert bb.report.family == "byol" and bb.report.coverage == 1.0 and bb.weights_id.endswith(":tf-same")
    for size in (224, 57):   # the papers' size, and an odd one (asymmetric SAME pads differ by parity)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            torch.testing.assert_close(bb.features(x), byol_convert_forward(sd, x), rtol=1e-5, atol=1e-5)


def test_other_resnet_files_are_not_taken_for_byol(byol_file, tmp_path):
    _, sd = byol_file
    written = _as_byol_convert_writes(sd)
    # tonylins/simclr-converter: HWIO views too, but a module's state dict (module order, num_batches_tracked)
    simclr = {k: written[k] for k in sd}
    simclr.update({k.replace("running_mean", "num_batches_tracked"): torch.tensor(0) for k in sd
                   if k.endswith("running_mean")})
    torch.save({"state_dict": simclr}, tmp_path / "simclr.pth")
    # a converted file re-saved contiguously, in byol-convert's order: nothing left to tell it apart
    torch.save({k: v.contiguous() for k, v in written.items()}, tmp_path / "contiguous.pth")
    for name in ("simclr.pth", "contiguous.pth"):
        bb = load_backbone(tmp_path / name, "from-keys")
        assert bb.report.family == "torchvision-resnet" and not bb.weights_id.endswith(":tf-same"), name
