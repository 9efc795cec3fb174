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
    "beit_finetuned": (beit_finetuned_deepspeed, "flat", "beit", {"classifier head"}, "beit_base_patch16_224"),
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
    bb = load_backbone(path)                                                      # arch inferred from the keys
    rep = bb.report
    assert (rep.layout, rep.family, rep.arch, rep.coverage) == (layout, family, arch, 1.0)
    assert set(rep.dropped) == dropped and rep.unexpected == [] and rep.missing == []
    _same_features(bb, ref, X28 if "dinov2" in name else X32)
    assert run_cli("inspect", path, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["coverage"] == 1.0 and shown["family"] == family and shown["dropped"] == rep.dropped
