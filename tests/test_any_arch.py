"""`--arch NAME` loads any architecture timm or torchvision builds (issue 32): a model's own `state_dict()` and the
original releases timm's per-model checkpoint filters convert, at 100% coverage, with the feature the
architecture's classifier reads, equal to the model's own forward at two input sizes; a wrong arch fails loudly.
"""
import re

import pytest
import timm
import torch
import torchvision

from bench import load_backbone
from bench.errors import CheckpointError
from conftest import run_cli


def _perturbed(model):
    """Random values everywhere (BN statistics, layerscale, norms), so a wrong mapping changes the output."""
    g = torch.Generator().manual_seed(sum(p.numel() for p in model.parameters()) % 9973)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.02)
    return model.eval()


def _timm(name, **kw):
    try:   # the reference takes any input size where the arch allows it, as bench builds it
        return _perturbed(timm.create_model(name, dynamic_img_size=True, **kw))
    except TypeError:
        return _perturbed(timm.create_model(name, **kw))


# arch → (reference model builder, two input sizes, expected feature mode)
ARCHS = {
    "convnext_atto": (lambda: _timm("convnext_atto"), (64, 96), "pool"),
    "tf_efficientnet_b0": (lambda: _timm("tf_efficientnet_b0"), (64, 96), "pool"),
    "pvt_v2_b0": (lambda: _timm("pvt_v2_b0"), (64, 96), "pool"),
    "regnetx_002": (lambda: _timm("regnetx_002"), (64, 96), "pool"),
    "resnet10t": (lambda: _timm("resnet10t"), (64, 96), "pool"),            # deep stem: conv1.0, not conv1
    "deit_tiny_distilled_patch16_224": (lambda: _timm("deit_tiny_distilled_patch16_224"), (224, 160), "pool"),
    "xcit_nano_12_p16_224": (lambda: _timm("xcit_nano_12_p16_224"), (224, 160), "pool"),
    "eva02_tiny_patch14_224": (lambda: _timm("eva02_tiny_patch14_224"), (224,), "pool"),   # q_bias: not a BEiT
    "efficientvit_m0": (lambda: _timm("efficientvit_m0"), (224,), "pool"),     # classifier = BN + Linear
    "tv:mobilenet_v3_small": (lambda: _perturbed(torchvision.models.mobilenet_v3_small()), (64, 96), "pool"),
}


def _reference_feature(ref, x):
    if isinstance(ref, torchvision.models.MobileNetV3):
        return ref.classifier[:-1](torch.flatten(ref.avgpool(ref.features(x)), 1))   # all but the last Linear
    return ref.forward_head(ref.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_own_state_dict_loads_with_arch_and_gives_the_classifiers_feature(arch, tmp_path):
    build, sizes, mode = ARCHS[arch]
    torch.manual_seed(0)
    ref = build()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    bb = load_backbone(tmp_path / "w.pth", arch)
    rep = bb.report
    assert (rep.coverage, rep.missing, rep.unexpected, rep.feature_mode) == (1.0, [], [], mode)
    assert any(n.startswith(f"feature {mode!r}") for n in rep.notes)
    own = getattr(ref, "pretrained_cfg", {}).get("mean", (0.485, 0.456, 0.406))   # EVA-02: CLIP's, not BEiT's 0.5
    assert rep.family == "timm-arch" and rep.preprocessing["mean"] == tuple(own)
    for size in sizes:
        x = torch.randn(1 if size > 100 else 2, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            torch.testing.assert_close(bb.features(x), _reference_feature(ref, x), rtol=1e-5, atol=1e-5)


def test_pyramid_backbones_give_per_stage_maps(tmp_path):
    """Detection / segmentation read `forward_intermediates`: four maps at strides 4-32, the reference's."""
    ref = _timm("pvt_v2_b0")
    torch.save(ref.state_dict(), tmp_path / "p.pth")
    bb = load_backbone(tmp_path / "p.pth", "pvt_v2_b0")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got, want = bb.model.forward_intermediates(x, intermediates_only=True), \
            ref.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[-1] for m in got] == [16, 8, 4, 2]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------- original releases, mapped by timm's own filters
def _convnext_fb_name(k):
    """timm ConvNeXt → facebookresearch/ConvNeXt models/convnext.py names (downsample_layers, stages.N.M,
    dwconv, pwconv1/2, a final `norm` and a `head` Linear)."""
    k = k.replace("stem.", "downsample_layers.0.")
    k = re.sub(r"stages\.(\d)\.downsample\.", r"downsample_layers.\1.", k)
    k = re.sub(r"stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2.", k)
    k = k.replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
    return k.replace("head.norm.", "norm.").replace("head.fc.", "head.")


def test_convnext_original_release_loads_through_timms_filter(tmp_path):
    ref = _timm("convnext_atto")
    sd = {_convnext_fb_name(k): v for k, v in ref.state_dict().items()}
    assert "downsample_layers.1.1.weight" in sd and "stages.0.0.pwconv1.weight" in sd and "norm.weight" in sd
    torch.save({"model": sd}, tmp_path / "convnext_atto_fb.pth")   # main.py's save_model: {'model', ...}
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout.*pass --arch NAME"):
        load_backbone(tmp_path / "convnext_atto_fb.pth")
    bb = load_backbone(tmp_path / "convnext_atto_fb.pth", "convnext_atto")
    assert bb.report.coverage == 1.0 and bb.report.layout == "by-arch"
    assert any("convnext.checkpoint_filter_fn" in n and "renamed" in n for n in bb.report.notes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bb.features(x), _reference_feature(ref, x))


# The original Swin release (microsoft names, PatchMerging closing each stage) is loaded the same way against a
# re-statement of microsoft's Swin in tests/test_publisher_layouts.py (SimMIM Swin).


# ------------------------------------------------------------- loud failures
def test_wrong_arch_or_wrong_mapping_fails_naming_keys(tmp_path):
    torch.save(_timm("convnext_atto").state_dict(), tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*convnext_femto"):
        load_backbone(tmp_path / "c.pth", "convnext_femto")          # same family, other widths
    with pytest.raises(CheckpointError, match=r"(could not map|no place in|only .* loaded|shape mismatch)"):
        load_backbone(tmp_path / "c.pth", "pvt_v2_b0")              # another family's filter and keys
    sd = _timm("pvt_v2_b0").state_dict()
    sd["stages.9.extra.weight"] = torch.zeros(3)                      # a key the mapping leaves without a place
    torch.save(sd, tmp_path / "p.pth")
    with pytest.raises(CheckpointError, match=r"1 backbone tensors have no place in pvt_v2_b0 \(e\.g\. stages\.9"):
        load_backbone(tmp_path / "p.pth", "pvt_v2_b0")
    assert load_backbone(tmp_path / "p.pth", "pvt_v2_b0", allow_partial=True).report.unexpected == [
        "stages.9.extra.weight"]


def test_without_arch_the_refusal_names_arch_in_one_line(tmp_path, capsys):
    torch.save(_timm("regnetx_002").state_dict(), tmp_path / "r.pth")
    assert run_cli("inspect", tmp_path / "r.pth") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown checkpoint layout" in err and "--arch NAME" in err
    assert run_cli("inspect", tmp_path / "r.pth", "--arch", "regnetx_002") == 0
    out = capsys.readouterr().out
    assert "coverage:      100.0%" in out and "layout:        by-arch" in out
