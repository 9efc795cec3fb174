"""Every published checkpoint layout, rebuilt from real timm models with random weights and the families' exact
key names and extra groups (research/checkpoints.md), must load with 100% coverage into a model whose
forward_features equals the reference model's. Tiny models: 2-block ViTs at 32 px, resnet18 / resnet26.
"""
import argparse
import json

import pytest
import timm
import torch

from bench import load_backbone
from bench.backbones.layouts import list_layouts
from conftest import run_cli

X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
X28 = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))


def load_tiny(path, **kw):
    """The tiny models here are no published configuration: say so (`--arch from-keys`), as a user would."""
    return load_backbone(path, "from-keys", **kw)


def _perturbed(model):
    """Random weights everywhere (layerscale, pos_embed, cls, BN stats), so a wrong mapping changes the output."""
    g = torch.Generator().manual_seed(sum(p.numel() for p in model.parameters()) % 9973)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def vit(**kw):
    return _perturbed(timm.create_model("vit_tiny_patch16_224", num_classes=kw.pop("num_classes", 0), depth=2,
                                        img_size=32, **kw))


def resnet(name="resnet18"):
    """One block per stage keeps the files small; the loader infers `resnet18` + layers=(1, 1, 1, 1)."""
    return _perturbed(timm.create_model(name, num_classes=0, layers=(1, 1, 1, 1)))


def few(model, n=4):
    """A handful of a second network's tensors: enough to check that its group is recognised and dropped."""
    return dict(list(model.state_dict().items())[:n])


def dinov2(name="vit_small_patch14_dinov2"):
    return _perturbed(timm.create_model(name, num_classes=0, depth=2, embed_dim=192, num_heads=3, img_size=28))


def beit(shared=True, **kw):
    return _perturbed(timm.create_model("beit_base_patch16_224", depth=2, embed_dim=192, num_heads=3, img_size=32,
                                        num_classes=kw.pop("num_classes", 0),
                                        use_shared_rel_pos_bias=shared, use_rel_pos_bias=not shared, **kw))


def pre(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def t(*shape):
    return torch.randn(*shape)


# ---------------------------------------------------------------- builders: (object to save, reference model)
def mae_full():
    m = vit()
    sd = {**m.state_dict(), "mask_token": t(1, 1, 192), "decoder_embed.weight": t(8, 192), "decoder_pos_embed":
          t(1, 5, 8), "decoder_blocks.0.norm1.weight": t(8), "decoder_norm.weight": t(8), "decoder_pred.weight":
          t(768, 8)}
    return {"model": sd}, m


def mae_finetuned():
    m = vit(global_pool="avg", num_classes=10)      # fc_norm instead of norm, plus the 1000-class head
    return {"model": m.state_dict()}, m


def ibot_backbone_file():
    m = vit()
    return {"state_dict": {**m.state_dict(), "masked_embed": t(192), "head.mlp.0.weight": t(16, 192),
                           "head.last_layer.weight_g": t(16, 1), "head.last_layer2.weight_v": t(16, 16)}}, m


def dinov2_plain():
    m = dinov2()
    return {**m.state_dict(), "mask_token": t(1, 192)}, m


def dinov2_registers():
    """DINOv2 stores registers apart and cls inside pos_embed; timm folds pos_embed[0] into cls_token."""
    m = dinov2("vit_small_patch14_reg4_dinov2")
    sd = dict(m.state_dict())
    pos0 = t(1, 1, 192)
    sd["register_tokens"] = sd.pop("reg_token")
    sd["pos_embed"] = torch.cat([pos0, sd["pos_embed"]], dim=1)
    sd["cls_token"] = sd["cls_token"] - pos0
    return {**sd, "mask_token": t(1, 192)}, m


def dinov2_giant_swiglu():
    m = dinov2("vit_giant_patch14_dinov2")
    sd = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v for k, v in m.state_dict().items()}
    return {**sd, "mask_token": t(1, 192)}, m


def beit_pretrained():
    m = beit(global_pool="token", init_values=0.1)
    sd = {**m.state_dict(), "mask_token": t(1, 1, 192), "lm_head.weight": t(64, 192), "lm_head.bias": t(64),
          "rel_pos_bias.relative_position_index": torch.zeros(5, 5, dtype=torch.long)}
    return {"model": sd}, m


def beitv2_pretrained():
    obj, m = beit_pretrained()
    obj["model"].update({"cls_pt_layers.0.norm1.weight": t(192), "cls_pt_layers.0.attn.qkv.weight": t(576, 192)})
    return obj, m


def beit_finetuned_deepspeed():
    m = beit(shared=False, global_pool="avg", init_values=0.1, num_classes=10)   # per-block tables, fc_norm, head
    return {"module": m.state_dict(), "ds_version": "0.9"}, m


def data2vec_pretrained():
    m, ema = beit(global_pool="token", init_values=0.1), beit(global_pool="token", init_values=0.1)
    sd = {**m.state_dict(), "mask_token": t(1, 1, 192), "lm_head.weight": t(192, 192)}
    return {"model": sd, "model_ema": ema.state_dict(), "args": argparse.Namespace(lr=1e-3), "epoch": 799}, m


def torchvision_resnet():
    m = resnet()
    return {**m.state_dict(), "fc.weight": t(10, 512), "fc.bias": t(10)}, m


def swav():
    m = resnet()
    return {**pre(m.state_dict(), "module."), "module.projection_head.0.weight": t(16, 512),
            "module.projection_head.1.running_mean": t(16), "module.prototypes.weight": t(30, 16)}, m


def deepcluster_v2():
    m = resnet()
    return {**pre(m.state_dict(), "module."), "module.projection_head.0.weight": t(16, 512),
            **{f"module.prototypes.prototypes{i}.weight": t(30, 16) for i in range(3)}}, m


def _train_state(sd):
    return {"epoch": 200, "arch": "resnet18", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []}}


def moco_v2():
    m, k = resnet(), vit()
    sd = {**pre(m.state_dict(), "module.encoder_q."), "module.encoder_q.fc.0.weight": t(16, 512),
          "module.encoder_q.fc.2.weight": t(8, 16), **pre(few(k), "module.encoder_k."),
          "module.queue": t(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return _train_state(sd), m


def moco_v1():
    m = resnet()
    sd = {**pre(m.state_dict(), "module.encoder_q."), "module.encoder_q.fc.weight": t(8, 512),
          "module.encoder_q.fc.bias": t(8), **pre(few(vit()), "module.encoder_k."),
          "module.queue": t(8, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return _train_state(sd), m


def moco_v3_resnet():
    m = resnet()
    sd = {**pre(m.state_dict(), "module.base_encoder."), "module.base_encoder.fc.0.weight": t(16, 512),
          **pre(few(vit()), "module.momentum_encoder."), "module.predictor.0.weight": t(16, 16)}
    return {**_train_state(sd), "scaler": {"scale": 1.0}}, m


def moco_v3_vit_small():
    """MoCo v3 ViT-S: 12 heads (vits.py), where timm's vit_small has 6."""
    m = _perturbed(timm.create_model("vit_small_patch16_224", num_classes=0, depth=2, img_size=32, num_heads=12))
    sd = {**pre(m.state_dict(), "module.base_encoder."), "module.base_encoder.head.0.weight": t(16, 384),
          **pre(few(m), "module.momentum_encoder."), "module.predictor.0.weight": t(16, 16)}
    return {**_train_state(sd), "arch": "vit_small"}, m


def simsiam():
    m = resnet()
    sd = {**pre(m.state_dict(), "module.encoder."), "module.encoder.fc.0.weight": t(16, 512),
          "module.encoder.fc.6.running_var": t(16), "module.predictor.0.weight": t(8, 16)}
    return _train_state(sd), m


def barlow_full():
    m = resnet()
    sd = {**pre(m.state_dict(), "module.backbone."), "module.projector.0.weight": t(16, 512),
          "module.bn.running_mean": t(16)}
    return {"epoch": 1000, "model": sd, "optimizer": {"state": {}, "param_groups": []}}, m


def _selfdistill(teacher, student, loss_key, head_prefix="head."):
    return {"teacher": {**pre(teacher.state_dict(), "backbone."), f"{head_prefix}mlp.0.weight": t(16, 192),
                        f"{head_prefix}last_layer.weight_g": t(16, 1)},
            "student": {**pre(student.state_dict(), "module.backbone."), "module.head.mlp.0.weight": t(16, 192)},
            "optimizer": {"state": {}}, "epoch": 100, "args": argparse.Namespace(arch="vit_tiny"),
            loss_key: {"center": t(1, 16)}}


def dino_full_vit():
    teacher = vit()
    return _selfdistill(teacher, vit(), "dino_loss"), teacher


def dino_full_resnet():
    """ResNet teacher is DDP-wrapped too (main_dino.py wraps it when the model has batch-norm)."""
    teacher = resnet()
    return {"teacher": pre(teacher.state_dict(), "module.backbone."),
            "student": pre(few(teacher), "module.backbone."), "args": argparse.Namespace(arch="resnet18"),
            "dino_loss": {"center": t(1, 16)}}, teacher


def ibot_full():
    teacher = vit()
    obj = _selfdistill(teacher, vit(), "ibot_loss")
    obj["student"]["module.backbone.masked_embed"] = t(192)
    return obj, teacher


def vissl():
    m = resnet()
    trunk = pre(m.state_dict(), "_feature_blocks.")
    return {"phase_idx": 199, "iteration": 5, "classy_state_dict": {"base_model": {"model": {
        "trunk": trunk, "heads": {"0.clf.0.weight": t(10, 512)}}}}}, m


_TV_TO_SEPARIUS = [("conv1.", "net.0.0."), ("bn1.", "net.0.1.0.")]
_BLOCK = {"conv1": "net.0", "bn1": "net.1.0", "conv2": "net.2", "bn2": "net.3.0", "conv3": "net.4",
          "bn3": "net.5.0", "downsample.0": "projection.shortcut", "downsample.1": "projection.bn.0"}


def _separius_name(k):
    """torchvision → Separius SimCLRv2-Pytorch names, transcribed from research/checkpoints.md §6."""
    for tv, sep in _TV_TO_SEPARIUS:
        if k.startswith(tv):
            return sep + k[len(tv):]
    layer, block, rest = k.split(".", 2)
    for tv, sep in _BLOCK.items():
        if rest.startswith(tv + "."):
            return f"net.{layer[-1]}.blocks.{block}.{sep}.{rest[len(tv) + 1:]}"
    raise KeyError(k)


def simclrv2_separius():
    m = resnet("resnet50")       # bottleneck blocks like r50_1x_sk0 (one per stage to stay small)
    sd = {_separius_name(k): v for k, v in m.state_dict().items()}
    return {"resnet": {**sd, "fc.weight": t(10, 2048), "fc.bias": t(10)}, "head": {"layers.0.weight": t(8, 8)}}, m


def lightning():
    m = resnet()
    sd = {**pre(m.state_dict(), "backbone."), "projector.0.weight": t(16, 512),
          **pre(few(vit()), "momentum_backbone."), "classifier.weight": t(10, 512)}
    return {"state_dict": sd, "hyper_parameters": {"lr": 0.1}, "pytorch-lightning_version": "2.1.0", "epoch": 3}, m


def mmselfsup():
    m = resnet()
    sd = {**pre(m.state_dict(), "backbone."), "neck.mlp.0.weight": t(16, 512), "head.predictor.weight": t(8, 16)}
    return {"state_dict": sd, "meta": {"epoch": 200, "mmselfsup_version": "0.9"}}, m


def deit3_layerscale_patch16():
    """Layerscale with a 16-px patch is DeiT-III, not DINOv2 (DINOv2 needs ls1.gamma AND patch 14)."""
    m = vit(init_values=1e-5)
    return {"model": m.state_dict()}, m


# name → (builder, layout, family, dropped groups, inferred arch, input)
CASES = {
    "mae_full": (mae_full, "flat", "mae", {"MAE decoder", "mask token (MAE/BEiT/data2vec)"}, "vit_tiny_patch16_224"),
    "mae_finetuned": (mae_finetuned, "flat", "mae-finetuned", {"classifier head"}, "vit_tiny_patch16_224"),
    "ibot_backbone": (ibot_backbone_file, "flat", "ibot",
                      {"masked-image token (iBOT masked_embed)", "SSL projection head (DINO/iBOT head)"},
                      "vit_tiny_patch16_224"),
    "deit3_layerscale": (deit3_layerscale_patch16, "flat", "timm-vit", set(), "vit_tiny_patch16_224"),
    "dinov2": (dinov2_plain, "flat", "dinov2", {"mask token"}, "vit_small_patch14_dinov2"),
    "dinov2_reg4": (dinov2_registers, "flat", "dinov2", {"mask token"}, "vit_small_patch14_reg4_dinov2"),
    "dinov2_giant_swiglu": (dinov2_giant_swiglu, "flat", "dinov2", {"mask token"}, "vit_giant_patch14_dinov2"),
    "beit": (beit_pretrained, "flat", "beit", {"BEiT lm head", "mask token (MAE/BEiT/data2vec)",
                                               "relative position index (recomputed)"}, "beit_base_patch16_224"),
    "beitv2": (beitv2_pretrained, "flat", "beit-v2",
               {"BEiT lm head", "mask token (MAE/BEiT/data2vec)", "relative position index (recomputed)",
                "BEiT-v2 patch aggregation layers"}, "beit_base_patch16_224"),
    "beit_finetuned": (beit_finetuned_deepspeed, "flat", "beit-finetuned", {"classifier head"},
                       "beit_base_patch16_224"),
    "data2vec": (data2vec_pretrained, "model+model_ema", "data2vec",
                 {"BEiT lm head", "mask token (MAE/BEiT/data2vec)", "model_ema (other network)"},
                 "beit_base_patch16_224"),
    "torchvision_resnet": (torchvision_resnet, "flat", "torchvision-resnet", {"classifier head"}, "resnet18"),
    "swav": (swav, "module-prefixed", "swav", {"SwAV/DC-v2 projection head", "SwAV/DC-v2 prototypes"}, "resnet18"),
    "deepcluster_v2": (deepcluster_v2, "module-prefixed", "deepcluster-v2/sela-v2",
                       {"SwAV/DC-v2 projection head", "SwAV/DC-v2 prototypes"}, "resnet18"),
    "moco_v1": (moco_v1, "moco-v1/v2", "moco-v1/v2",
                {"momentum encoder", "queue", "projection head / MLP (encoder fc/head)"}, "resnet18"),
    "moco_v2": (moco_v2, "moco-v1/v2", "moco-v1/v2",
                {"momentum encoder", "queue", "projection head / MLP (encoder fc/head)"}, "resnet18"),
    "moco_v3_resnet": (moco_v3_resnet, "moco-v3", "moco-v3",
                       {"momentum encoder", "predictor", "projection head / MLP (encoder fc/head)"}, "resnet18"),
    "moco_v3_vit_small": (moco_v3_vit_small, "moco-v3", "moco-v3",
                          {"momentum encoder", "predictor", "projection head / MLP (encoder fc/head)"},
                          "vit_small_patch16_224"),
    "simsiam": (simsiam, "simsiam", "simsiam", {"predictor", "projection head / MLP (encoder fc/head)"}, "resnet18"),
    "barlow_vicreg_full": (barlow_full, "module-backbone", "barlow-twins/vicreg",
                           {"projector", "projector batch-norm"}, "resnet18"),
    "dino_full_vit": (dino_full_vit, "teacher-student", "dino",
                      {"SSL projection head (DINO/iBOT head)", "student (other network)"}, "vit_tiny_patch16_224"),
    "dino_full_resnet": (dino_full_resnet, "teacher-student", "dino", {"student (other network)"}, "resnet18"),
    "ibot_full": (ibot_full, "teacher-student", "ibot",
                  {"SSL projection head (DINO/iBOT head)", "student (other network)"}, "vit_tiny_patch16_224"),
    "vissl": (vissl, "vissl", "vissl", {"VISSL heads"}, "resnet18"),
    "simclrv2_separius": (simclrv2_separius, "simclrv2-separius", "simclr",
                          {"classifier head", "SimCLR projection head"}, "resnet50"),
    "lightning": (lightning, "backbone-prefixed", "lightning", {"projector", "momentum_backbone", "classifier"},
                  "resnet18"),
    "mmselfsup": (mmselfsup, "backbone-prefixed", "mmselfsup", {"neck", "head"}, "resnet18"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each layout saved once: name → (path, reference model, object)."""
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, (builder, *_rest) in CASES.items():
        torch.manual_seed(hash(name) % 1000)
        obj, ref = builder()
        torch.save(obj, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", ref, obj)
    return out


def _same_features(bb, ref, x):
    with torch.no_grad():
        torch.testing.assert_close(bb.model.forward_features(x), ref.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_layout_loads_fully_with_reference_features(built, name, capsys):
    path, ref, obj = built[name]
    _, layout, family, dropped, arch = CASES[name]
    assert [lay.name for lay in list_layouts() if lay.matches(obj)] == [layout]   # exactly one layout matches
    bb = load_tiny(path)                                                          # arch inferred from the keys
    rep = bb.report
    assert (rep.layout, rep.family, rep.arch, rep.coverage) == (layout, family, arch, 1.0)
    assert set(rep.dropped) == dropped and rep.unexpected == [] and rep.missing == []
    _same_features(bb, ref, X28 if "dinov2" in name else X32)
    from bench.errors import CheckpointError
    with pytest.raises(CheckpointError, match="not a published configuration.*--arch from-keys"):
        load_backbone(path)                     # 2-block / one-block-per-stage: refused unless said explicitly
    assert run_cli("inspect", path, "--json", "--arch", "from-keys") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["coverage"] == 1.0 and shown["family"] == family and shown["dropped"] == rep.dropped


# ---------------------------------------------------------------- traps (research/checkpoints.md §0 and per family)
def test_dino_student_is_chosen_with_ckpt_key(built):
    path, teacher, obj = built["dino_full_vit"]
    student = vit()
    student.load_state_dict({k[len("module.backbone."):]: v for k, v in obj["student"].items()
                             if k.startswith("module.backbone.")})
    bb = load_tiny(path, ckpt_key="student")
    assert bb.report.ckpt_key == "student" and bb.report.dropped["teacher (other network)"] == 1
    _same_features(bb, student, X32)
    with torch.no_grad():
        assert not torch.allclose(bb.model.forward_features(X32), teacher.forward_features(X32))


def test_mocov3_vit_small_gets_12_heads_not_timms_6(built):
    path, ref, _ = built["moco_v3_vit_small"]
    bb = load_tiny(path)
    assert bb.report.arch == "vit_small_patch16_224" and bb.model.blocks[0].attn.num_heads == 12
    from bench.backbones._assemble import plan_model
    from bench.backbones.families import family_spec
    sd = {k: v for k, v in bb.model.state_dict().items()}
    plan = plan_model(sd, "vit_small_patch16_224", family_spec("moco-v3"), "x")   # a user's stock --arch too
    assert plan.kwargs["num_heads"] == 12
    six = timm.create_model("vit_small_patch16_224", num_classes=0, depth=2, img_size=32)   # the silent trap
    six.load_state_dict(ref.state_dict())
    with torch.no_grad():
        assert not torch.allclose(six.forward_features(X32), ref.forward_features(X32), atol=1e-3)


def test_mask_token_alone_is_not_dinov2(built):
    bb = load_tiny(built["mae_full"][0])
    assert bb.report.family == "mae" and "dinov2" not in bb.report.arch
    assert isinstance(bb.model.blocks[0].ls1, torch.nn.Identity)   # no layerscale was invented


def test_mae_finetuned_uses_fc_norm_avg_pool(built):
    path, ref, _ = built["mae_finetuned"]
    bb = load_tiny(path)
    assert bb.report.model_kwargs["global_pool"] == "avg" and bb.report.feature_mode == "pool"
    with torch.no_grad():   # fc_norm(mean of patch tokens), MAE models_vit.py global_pool=True
        tokens = ref.forward_features(X32)
        torch.testing.assert_close(bb.features(X32), ref.fc_norm(tokens[:, 1:].mean(1)))


def test_beit_pretrained_keeps_norm_with_token_pool(built):
    bb = load_tiny(built["beit"][0])
    assert bb.report.model_kwargs["global_pool"] == "token" and isinstance(bb.model.norm, torch.nn.LayerNorm)
    assert bb.report.preprocessing["mean"] == (0.5, 0.5, 0.5)                       # BEiT v1 pretraining
    assert load_tiny(built["beitv2"][0]).report.preprocessing["mean"] == (0.485, 0.456, 0.406)


def test_pos_embed_is_resampled_to_the_requested_resolution(tmp_path):
    from timm.layers import resample_abs_pos_embed
    ref = _perturbed(timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32))   # 12 blocks, 2×2 grid
    torch.save({"model": ref.state_dict()}, tmp_path / "v.pth")
    bb = load_backbone(tmp_path / "v.pth", "vit_tiny_patch16_224")                        # model grid 14×14
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), new_size=[14, 14], num_prefix_tokens=1)
    assert bb.report.coverage == 1.0 and any("pos_embed resampled 4 → 196" in n for n in bb.report.notes)
    torch.testing.assert_close(bb.model.pos_embed.detach(), expected)


def test_family_preprocessing_and_probe_feature(built):
    assert load_tiny(built["simclrv2_separius"][0]).report.preprocessing["std"] == (1.0, 1.0, 1.0)
    assert load_tiny(built["swav"][0]).report.preprocessing["std"] == (0.228, 0.224, 0.225)
    from bench.backbones.families import family_spec
    dino, ibot = family_spec("dino"), family_spec("ibot")
    assert [dino.feature_mode("vit", w) for w in (384, 768)] == ["last4-cls", "cls+avgpool-interleaved"]
    assert [ibot.feature_mode("vit", w) for w in (384, 768)] == ["last4-cls", "cls+avgpool"]
    assert dino.feature_mode("resnet", 0) == "pool"


def test_widened_resnet_fails_loudly(tmp_path):
    sd = resnet().state_dict()
    sd["conv1.weight"] = t(128, 3, 7, 7)   # SwAV RN50-w2 / SimCLR 2x widen every layer, the stem included
    torch.save(sd, tmp_path / "w2.pth")
    with pytest.raises(Exception, match="width-multiplied"):
        load_backbone(tmp_path / "w2.pth")


@pytest.mark.parametrize("name,arch", [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50"),
                                       ("resnet101", "resnet101"), ("wide_resnet50_2", "wide_resnet50_2")])
def test_resnet_depth_from_block_counts(name, arch):
    from bench.backbones._arch import guess_arch
    with torch.device("meta"):
        sd = timm.create_model(name).state_dict()
    assert guess_arch(sd).arch == arch and guess_arch(sd).structure == {}


def test_two_matching_layouts_is_an_error(monkeypatch, built):
    from bench.backbones import layouts
    from bench.errors import CheckpointError
    real = layouts.list_layouts()
    monkeypatch.setattr(layouts, "list_layouts", lambda: real + [real[0]])
    with pytest.raises(CheckpointError, match="matches several checkpoint layouts"):
        layouts.detect_layout(built["mae_full"][2], "x.pth")


def test_unknown_layout_and_unknown_arch_say_what_to_do(tmp_path):
    from bench.errors import CheckpointError
    torch.save({"encoder": {"weird.weight": t(2)}}, tmp_path / "u.pth")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*bench inspect"):
        load_backbone(tmp_path / "u.pth")


def test_convert_round_trip_gives_the_same_model(built, tmp_path, capsys):
    for name in ("dinov2_reg4", "moco_v3_vit_small", "beit"):
        path, ref, _ = built[name]
        out = tmp_path / f"{name}.safetensors"
        assert run_cli("convert", path, out, "--arch", "from-keys") == 0
        bb = load_backbone(out)
        assert bb.report.coverage == 1.0 and bb.report.layout == "bench-convert"
        assert bb.report.family == CASES[name][2] and bb.report.arch == CASES[name][4]
        _same_features(bb, ref, X28 if "dinov2" in name else X32)
        from safetensors import safe_open
        with safe_open(str(out), framework="pt") as f:
            assert json.loads(f.metadata()["bench.backbone"])["source_sha256"] == load_tiny(path).report.sha256


# ---------------------------------------------------------------- safety and loud failures through the CLI
class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.path}",))


def exclude_bias_and_norm(p):   # Barlow/VICReg LARS filter, pickled by reference in their full checkpoints
    return p.ndim == 1


def test_cli_errors_are_one_line_and_execute_nothing(built, tmp_path, capsys):
    marker = tmp_path / "executed"
    torch.save({"state_dict": resnet().state_dict(), "x": _Marker(marker)}, tmp_path / "evil.pth")
    path = built["torchvision_resnet"][0]
    (tmp_path / "trunc.pth").write_bytes(path.read_bytes()[:5000])
    (tmp_path / "empty.pth").write_bytes(b"")
    cases = [(["inspect", tmp_path / "evil.pth"], r"refused to unpickle the global 'posix.system'.*--trust-checkpoint"),
             (["inspect", tmp_path / "trunc.pth"], "truncated or corrupt"),
             (["inspect", tmp_path / "empty.pth"], "empty"),
             (["inspect", path, "--arch", "resnet50"], "shape mismatch"),
             (["inspect", built["dino_full_vit"][0], "--arch", "vit_small_patch16_224"], "shape mismatch")]
    for argv, pattern in cases:
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and __import__("re").search(pattern, err), err
    assert not marker.exists()


def test_barlow_full_checkpoint_needs_trust(built, tmp_path):
    from bench.errors import CheckpointError
    obj, ref = barlow_full()
    obj["optimizer"]["param_groups"] = [{"weight_decay_filter": exclude_bias_and_norm}]
    torch.save(obj, tmp_path / "checkpoint.pth")
    with pytest.raises(CheckpointError, match="exclude_bias_and_norm.*--trust-checkpoint"):
        load_tiny(tmp_path / "checkpoint.pth")
    bb = load_tiny(tmp_path / "checkpoint.pth", trust_checkpoint=True)
    assert bb.report.family == "barlow-twins/vicreg" and bb.report.coverage == 1.0


def test_namespace_args_are_reported_as_non_tensors(built):
    rep = load_tiny(built["dino_full_vit"][0]).report
    assert "argparse.Namespace" in rep.pickle_globals and "args (argparse.Namespace)" in rep.extra_objects


def test_arch_of_the_other_kind_is_named_with_the_fix(built):
    """A ViT file with --arch resnet50 (and the reverse) says what the file holds, before any model is built."""
    from bench.errors import CheckpointError
    vit_path = built["moco_v3_vit_small"][0]
    with pytest.raises(CheckpointError, match=r"weights are a VIT but --arch resnet50 is not; pass --arch vit_"):
        load_backbone(vit_path, arch="resnet50")
    resnet_path = built["torchvision_resnet"][0]
    with pytest.raises(CheckpointError, match=r"weights are a ResNet but --arch vit_small_patch16_224 is not"):
        load_backbone(resnet_path, arch="vit_small_patch16_224")


# ---------------------------------------------------------------- truncated files (issue 17.4)
def _shapes_only(name, drop, **kw):
    """A full-size model's keys at almost no disk cost: every tensor a stride-0 view of one zero."""
    with torch.device("meta"):
        sd = timm.create_model(name, num_classes=0, **kw).state_dict()
    return {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in sd.items() if not k.startswith(drop)}


@pytest.mark.parametrize("name,drop,pattern", [
    ("resnet50", "layer4.2.", r"stage blocks \(3, 4, 6, 2\) is not a published configuration; the nearest is "
                              r"resnet50 \(3, 4, 6, 3\); missing layer4\.2\.\*"),
    ("vit_small_patch16_224", "blocks.11.", r"a depth-11 ViT is not a published configuration; the nearest is "
                                            r"vit_small_patch16_224 with 12 blocks; missing blocks\.11\.\*")])
def test_truncated_file_is_refused_not_loaded_as_a_smaller_model(tmp_path, capsys, name, drop, pattern):
    torch.save({"model": _shapes_only(name, drop)}, tmp_path / "cut.pth")
    assert run_cli("inspect", tmp_path / "cut.pth") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(pattern + ".*truncated.*--arch from-keys", err), err
    from bench.errors import CheckpointError
    with pytest.raises(CheckpointError, match=r"only .* loaded; missing"):   # the published arch, literally: short
        load_backbone(tmp_path / "cut.pth", name)


def test_from_keys_builds_the_unpublished_shape_when_asked(tmp_path):
    torch.save(_shapes_only("resnet50", "layer4.2."), tmp_path / "cut.pth")
    bb = load_backbone(tmp_path / "cut.pth", "from-keys")
    assert bb.report.coverage == 1.0 and tuple(bb.report.model_kwargs["layers"]) == (3, 4, 6, 2)
    assert any("built from the keys (--arch from-keys)" in n for n in bb.report.notes)


def test_trusted_file_with_training_script_globals_loads_with_stubs(tmp_path, monkeypatch):
    """`__main__.TrainArgs` / VICReg's `__main__.exclude_bias_and_norm` do not exist in bench's process."""
    import dataclasses
    import sys
    from bench.errors import CheckpointError

    @dataclasses.dataclass
    class TrainArgs:
        lr: float = 0.1

    def exclude_bias_and_norm(p):
        return p.ndim == 1
    main = sys.modules["__main__"]
    for obj in (TrainArgs, exclude_bias_and_norm):
        obj.__module__, obj.__qualname__ = "__main__", obj.__name__
        monkeypatch.setattr(main, obj.__name__, obj, raising=False)
    full, ref = barlow_full()
    full["args"] = TrainArgs(lr=0.5)
    full["optimizer"]["param_groups"] = [{"weight_decay_filter": exclude_bias_and_norm}]
    torch.save(full, tmp_path / "ckpt.pth")
    for obj in (TrainArgs, exclude_bias_and_norm):
        monkeypatch.delattr(main, obj.__name__)          # the loading process is not the training script
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_tiny(tmp_path / "ckpt.pth")
    bb = load_tiny(tmp_path / "ckpt.pth", trust_checkpoint=True)
    assert bb.report.stubbed_globals == ["__main__.TrainArgs", "__main__.exclude_bias_and_norm"]
    assert bb.report.coverage == 1.0 and any("stubbed globals" in n for n in bb.report.notes)
    _same_features(bb, ref, X32)
