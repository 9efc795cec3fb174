"""Position grids off the training resolution: each family's features must equal its own code's forward pass, at
two resolutions. The references below transcribe the publishers' interpolation code (dino/ibot
vision_transformer.py, dinov2 models/vision_transformer.py + hub/backbones.py, mae util/pos_embed.py, moco-v3
vits.py) and run timm's blocks on the tokens they prepare; bench's loader must match them without being told the
rule. Tiny 2-block ViTs on a 4×4 grid, evaluated on 3×3 and 6×6 (and 4×3) grids.
"""
import math

import pytest
import timm
import torch
import torch.nn as nn

from bench import load_backbone
from test_checkpoints import _perturbed, _selfdistill


def img(h, w, seed=0):
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- transcriptions of the publishers' code
def dino_interpolate_pos_encoding(pos_embed, x, w, h, patch):
    """facebookresearch/dino vision_transformer.py (bytedance/ibot has the same method)."""
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    patch_pos_embed = nn.functional.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)), mode="bicubic")
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def dinov2_interpolate_pos_encoding(pos_embed, x, w, h, patch, offset, antialias):
    """facebookresearch/dinov2 models/vision_transformer.py; hub: offset 0.1 / no antialias, _reg: 0.0 / True."""
    npatch = x.shape[1] - 1
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = x.shape[-1]
    w0, h0 = w // patch, h // patch
    M = int(math.sqrt(N))
    kwargs = {"scale_factor": (float(w0 + offset) / M, float(h0 + offset) / M)} if offset else {"size": (w0, h0)}
    patch_pos_embed = nn.functional.interpolate(patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
                                                mode="bicubic", antialias=antialias, **kwargs)
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def mae_interpolate_pos_embed(pos_embed, new_size, num_extra_tokens=1):
    """facebookresearch/mae util/pos_embed.py interpolate_pos_embed (square grids only, as there)."""
    orig_size = int((pos_embed.shape[-2] - num_extra_tokens) ** 0.5)
    extra_tokens = pos_embed[:, :num_extra_tokens]
    pos_tokens = pos_embed[:, num_extra_tokens:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, pos_embed.shape[-1]).permute(0, 3, 1, 2)
    pos_tokens = nn.functional.interpolate(pos_tokens, size=(new_size, new_size), mode="bicubic",
                                           align_corners=False)
    return torch.cat((extra_tokens, pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def mocov3_build_2d_sincos(h, w, embed_dim, temperature=10000.):
    """facebookresearch/moco-v3 vits.py VisionTransformerMoCo.build_2d_sincos_position_embedding."""
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1. / (temperature ** omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None]
    return torch.cat([torch.zeros([1, 1, embed_dim]), pos_emb], dim=1)


def run_blocks(m, x_img, pos_fn, registers=None, cls=None):
    """The publishers' prepare_tokens (cls first, add positions, then registers after cls), timm's blocks + norm."""
    B, _, w, h = x_img.shape            # their naming: w is the height axis
    x = m.patch_embed(x_img).flatten(1, 2)
    x = torch.cat((cls.expand(B, -1, -1), x), dim=1)
    x = x + pos_fn(x, w, h)
    if registers is not None:
        x = torch.cat((x[:, :1], registers.expand(B, -1, -1), x[:, 1:]), dim=1)
    return m.norm(m.blocks(x))


def vit16(**kw):
    return _perturbed(timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=64,
                                        dynamic_img_size=True, **kw))


SIZES = [(48, 48), (96, 96), (64, 48)]   # 3×3, 6×6, 4×3 grids off the stored 4×4


def _assert_features(bb, ref_tokens, x):
    with torch.no_grad():
        torch.testing.assert_close(bb.model.forward_features(x), ref_tokens, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pos")
    out = {}
    # DINO / iBOT full checkpoints (teacher kept)
    for name, loss in (("dino", "dino_loss"), ("ibot", "ibot_loss")):
        teacher = vit16()
        obj = _selfdistill(teacher, vit16(), loss)
        torch.save(obj, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", teacher)
    # MAE pre-training file (decoder present → family mae)
    m = vit16()
    torch.save({"model": {**m.state_dict(), "decoder_embed.weight": torch.randn(8, 192)}}, root / "mae.pth")
    out["mae"] = (root / "mae.pth", m)
    # MoCo v3 convert_to_deit.py output: {'model': base_encoder without head}, fixed sin-cos pos_embed, 12 heads
    m = _perturbed(timm.create_model("vit_small_patch16_224", num_classes=0, depth=2, img_size=64, num_heads=12,
                                     dynamic_img_size=True))
    with torch.no_grad():
        m.pos_embed.copy_(mocov3_build_2d_sincos(4, 4, 384))
    torch.save({"model": m.state_dict()}, root / "mocov3_deit.pth")
    out["mocov3"] = (root / "mocov3_deit.pth", m)
    # DINOv2 as its repository saves it (cls position inside pos_embed; registers apart)
    for name, arch in (("dinov2", "vit_small_patch14_dinov2"), ("dinov2_reg4", "vit_small_patch14_reg4_dinov2")):
        m = _perturbed(timm.create_model(arch, num_classes=0, depth=2, embed_dim=192, num_heads=3, img_size=56,
                                         dynamic_img_size=True))
        sd = dict(m.state_dict())
        cls, pos = sd["cls_token"], sd["pos_embed"]
        if "reg_token" in sd:       # timm folded pos[0] into cls; restore DINOv2's own layout
            pos0 = torch.randn(1, 1, 192)
            sd["register_tokens"] = sd.pop("reg_token")
            sd["pos_embed"] = pos = torch.cat([pos0, pos], dim=1)
            sd["cls_token"] = cls = cls - pos0
        torch.save({**sd, "mask_token": torch.zeros(1, 192)}, root / f"{name}.pth")
        out[name] = (root / f"{name}.pth", (m, cls, pos, sd.get("register_tokens")))
    return out


@pytest.mark.parametrize("name", ["dino", "ibot"])
def test_dino_and_ibot_use_dinos_offset_rule(files, name):
    path, ref = files[name]
    bb = load_backbone(path, "from-keys")
    assert bb.report.pos_embed_rule == "dino" and bb.report.family == name
    assert any("'dino' rule" in n for n in bb.report.notes)
    for h, w in SIZES:
        x = img(h, w)
        with torch.no_grad():
            expected = run_blocks(ref, x, lambda t, w_, h_: dino_interpolate_pos_encoding(ref.pos_embed, t, w_, h_, 16),
                                  cls=ref.cls_token)
        _assert_features(bb, expected, x)


@pytest.mark.parametrize("name,offset,antialias", [("dinov2", 0.1, False), ("dinov2_reg4", 0.0, True)])
def test_dinov2_uses_its_hub_interpolation(files, name, offset, antialias):
    path, (m, cls, pos, regs) = files[name]
    bb = load_backbone(path, "from-keys")
    assert bb.report.pos_embed_rule == ("dinov2-reg" if regs is not None else "dinov2")
    for h, w in [(56, 56), (42, 42), (84, 84), (56, 42)]:   # native 4×4 grid, then three others
        x = img(h, w, seed=h + w)
        with torch.no_grad():
            expected = run_blocks(m, x, lambda t, w_, h_: dinov2_interpolate_pos_encoding(
                pos, t, w_, h_, 14, offset, antialias), registers=regs, cls=cls)
        _assert_features(bb, expected, x)


def test_mae_uses_its_exact_size_bicubic(files):
    path, ref = files["mae"]
    bb = load_backbone(path, "from-keys")
    assert bb.report.pos_embed_rule == "mae" and bb.report.family == "mae"
    for side in (3, 6):
        x = img(16 * side, 16 * side)
        with torch.no_grad():
            pos = mae_interpolate_pos_embed(ref.pos_embed, side)
            expected = run_blocks(ref, x, lambda t, w_, h_: pos, cls=ref.cls_token)
        _assert_features(bb, expected, x)


def test_mocov3_convert_to_deit_file_gets_12_heads_and_a_recomputed_sincos_table(files):
    path, ref = files["mocov3"]
    bb = load_backbone(path, "from-keys")        # a flat file: the sin-cos table is its provenance
    rep = bb.report
    assert (rep.family, rep.pos_embed_rule, bb.model.blocks[0].attn.num_heads) == ("moco-v3", "moco-v3", 12)
    for h, w in SIZES:
        x = img(h, w)
        with torch.no_grad():
            pos = mocov3_build_2d_sincos(h // 16, w // 16, 384)
            expected = run_blocks(ref, x, lambda t, w_, h_: pos, cls=ref.cls_token)
        _assert_features(bb, expected, x)


def test_timms_rule_would_be_wrong_for_dino_and_dinov2(files):
    """The check above can fail: timm's default rule (bicubic, antialias, exact size) gives other features."""
    from bench.backbones.pos_embed import install_pos_embed_rule
    for name in ("dino", "dinov2"):
        bb = load_backbone(files[name][0], "from-keys")
        x = img(48, 48) if name == "dino" else img(42, 42)
        with torch.no_grad():
            own = bb.model.forward_features(x)
            install_pos_embed_rule(bb.model, "timm")
            timms = bb.model.forward_features(x)
        assert (own - timms).abs().max() > 1e-3


def test_flat_vit_small_without_provenance_keeps_timms_rule_and_six_heads(tmp_path):
    """A learned pos_embed is not MoCo v3's fixed table: the standard ViT-S (6 heads), timm's rule."""
    m = _perturbed(timm.create_model("vit_small_patch16_224", num_classes=0, depth=2, img_size=64))
    torch.save({"model": m.state_dict()}, tmp_path / "v.pth")
    bb = load_backbone(tmp_path / "v.pth", "from-keys")
    assert (bb.report.family, bb.report.pos_embed_rule, bb.model.blocks[0].attn.num_heads) == ("timm-vit", "timm", 6)
    assert ":pos-" not in bb.weights_id
    m2 = timm.create_model("vit_small_patch16_224", num_classes=0, depth=2, img_size=64, dynamic_img_size=True)
    m2.load_state_dict(m.state_dict())
    x = img(48, 48)
    with torch.no_grad():   # timm's own dynamic-size path: the installed 'timm' rule is the same computation
        torch.testing.assert_close(bb.model.forward_features(x), m2.eval().forward_features(x))


def test_segmentation_crop_size_uses_the_family_rule(files):
    """Segmentation fixes the ViT's input size to the crop; the stored grid is resampled by DINO's rule there too."""
    from bench.backbones.pos_embed import set_vit_input_size
    path, ref = files["dino"]
    bb = load_backbone(path, "from-keys")
    set_vit_input_size(bb.model, (96, 96))
    x = img(96, 96)
    with torch.no_grad():
        expected = run_blocks(ref, x, lambda t, w_, h_: dino_interpolate_pos_encoding(ref.pos_embed, t, w_, h_, 16),
                              cls=ref.cls_token)
    assert tuple(bb.model.patch_embed.grid_size) == (6, 6)
    _assert_features(bb, expected, x)


@pytest.mark.parametrize("arch,offset,antialias", [("vit_small_patch14_dinov2", 0.1, False),
                                                    ("vit_small_patch14_reg4_dinov2", 0.0, True)])
def test_dinov2_real_grid_at_224_and_518(tmp_path, arch, offset, antialias):
    """The published files' own grid (37×37, trained at 518 px) evaluated at 224 px (16×16) and at 518 px: the
    case where timm's rule was off by up to 0.25. One narrow block (head width 64, as bench infers) keeps it cheap."""
    m = _perturbed(timm.create_model(arch, num_classes=0, depth=1, embed_dim=128, num_heads=2, img_size=518,
                                     dynamic_img_size=True))
    sd = dict(m.state_dict())
    cls, pos, regs = sd["cls_token"], sd["pos_embed"], None
    if "reg_token" in sd:
        pos0 = torch.randn(1, 1, 128)
        regs = sd.pop("reg_token")
        sd["register_tokens"], sd["pos_embed"], sd["cls_token"] = regs, torch.cat([pos0, pos], 1), cls - pos0
        cls, pos = sd["cls_token"], sd["pos_embed"]
    assert pos.shape[1] - 1 == 37 * 37
    torch.save({**sd, "mask_token": torch.zeros(1, 128)}, tmp_path / "dinov2.pth")
    bb = load_backbone(tmp_path / "dinov2.pth", "from-keys")
    for size in (224, 518):
        x = img(size, size, seed=size)
        with torch.no_grad():
            expected = run_blocks(m, x, lambda t, w_, h_: dinov2_interpolate_pos_encoding(
                pos, t, w_, h_, 14, offset, antialias), registers=regs, cls=cls)
        _assert_features(bb, expected, x)
