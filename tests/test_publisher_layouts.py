"""Publishers' own files (issue 32), each re-stated here from the publisher's model and save code (keys,
containers, pickled configs), loaded with no flag but `--arch` where the file names no architecture, at 100%
coverage, and compared with a reference network written from the publisher's structure (not timm's).

The tiny models are no published configuration, so the loads say `--arch from-keys` as a user would.
"""
import math
import sys
import types
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench import load_backbone
from bench.errors import CheckpointError
from conftest import run_cli

IMAGENET_MEAN = (0.485, 0.456, 0.406)
X32 = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _perturb(model, seed=0):
    """Random values in every learnt tensor and BN statistic (a computed Swin attn_mask stays what it is)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point() and not k.endswith("attn_mask"):
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@contextmanager
def foreign_module(dotted, **classes):
    """Classes living in a module (yacs.config, a training script's package) that the loading process lacks: they
    exist while the file is written, and are gone when bench reads it."""
    names = [".".join(dotted.split(".")[:i + 1]) for i in range(dotted.count(".") + 1)]
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    for n, c in classes.items():
        c.__module__, c.__qualname__ = dotted, n
        setattr(sys.modules[dotted], n, c)
    try:
        yield
    finally:
        for name in names:
            del sys.modules[name]


class CfgNode(dict):
    """The shape of yacs.config.CfgNode as pickled: a dict subclass with its flags in __dict__."""

    def __init__(self, init=None):
        super().__init__(init or {})
        self.__dict__["__immutable__"] = True


def _simmim_config(kind="vit", img=224):
    return CfgNode({"MODEL": CfgNode({"TYPE": kind, "NAME": "simmim"}), "DATA": CfgNode({"IMG_SIZE": img})})


def _save_with_yacs(obj, path):
    with foreign_module("yacs.config", CfgNode=CfgNode):
        torch.save(obj, path)


# ------------------------------------------------------- SimMIM's ViT (microsoft/SimMIM models/vision_transformer.py)
def _rel_index(w):
    """BEiT/SimMIM relative-position index for a w×w grid plus CLS: token pairs by (dy, dx), then the three CLS
    entries (cls→token, token→cls, cls→cls) at the end of the table."""
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    n_rel = (2 * w - 1) ** 2
    idx = torch.zeros(w * w + 1, w * w + 1, dtype=torch.long)
    idx[1:, 1:] = (ys[:, None] - ys[None, :] + w - 1) * (2 * w - 1) + (xs[:, None] - xs[None, :] + w - 1)
    idx[0, :], idx[:, 0], idx[0, 0] = n_rel, n_rel + 1, n_rel + 2
    return idx


class SimMIMAttention(nn.Module):
    def __init__(self, dim, heads, window=None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.window = window
        if window:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2 + 3, heads))
            self.register_buffer("relative_position_index", _rel_index(window))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, shared_bias=None):
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        if self.window:
            attn = attn + self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                n, n, -1).permute(2, 0, 1)
        if shared_bias is not None:
            attn = attn + shared_bias
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class SimMIMBlock(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = SimMIMAttention(dim, heads, window)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma_1, self.gamma_2 = nn.Parameter(0.1 * torch.ones(dim)), nn.Parameter(0.1 * torch.ones(dim))

    def forward(self, x, shared_bias=None):
        x = x + self.gamma_1 * self.attn(self.norm1(x), shared_bias)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class SimMIMViT(nn.Module):
    """USE_APE False; fine-tune: USE_RPB (per block) + USE_MEAN_POOLING; pre-train: USE_SHARED_RPB, CLS after norm.
    64-d heads, as bench infers the head count from the width."""

    def __init__(self, dim=128, depth=2, heads=2, patch=16, img=32, finetune=True, num_classes=10):
        super().__init__()
        w = img // patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if not finetune:
            self.rel_pos_bias = nn.Module()
            self.rel_pos_bias.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2 + 3, heads))
            self.rel_pos_bias.register_buffer("relative_position_index", _rel_index(w))
        self.blocks = nn.ModuleList(SimMIMBlock(dim, heads, w if finetune else None) for _ in range(depth))
        self.norm = nn.Identity() if finetune else nn.LayerNorm(dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6) if finetune else None
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        self.w = w

    def forward_features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1)
        shared = None
        if self.fc_norm is None:
            rp = self.rel_pos_bias
            n = self.w * self.w + 1
            shared = rp.relative_position_bias_table[rp.relative_position_index.view(-1)].view(n, n, -1).permute(
                2, 0, 1)
        for blk in self.blocks:
            x = blk(x, shared)
        x = self.norm(x)
        return self.fc_norm(x[:, 1:].mean(1)) if self.fc_norm is not None else x[:, 0]


class SimMIMPretrain(nn.Module):
    """models/simmim.py: `encoder` (the ViT + mask_token, no head) and `decoder` (1×1 conv, pixel shuffle)."""

    def __init__(self):
        super().__init__()
        self.encoder = SimMIMViT(finetune=False, num_classes=0)
        self.encoder.mask_token = nn.Parameter(torch.zeros(1, 1, 128))
        self.decoder = nn.Sequential(nn.Conv2d(128, 16 ** 2 * 3, 1), nn.PixelShuffle(16))


def _simmim_save_state(model):
    """utils.save_checkpoint's container."""
    return {"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
            "lr_scheduler": {"last_epoch": 99}, "max_accuracy": 83.8, "epoch": 99, "config": _simmim_config()}


def test_simmim_finetuned_vit_reads_fc_norm_mean_with_imagenet_normalisation(tmp_path):
    ref = _perturb(SimMIMViT())
    _save_with_yacs(_simmim_save_state(ref), tmp_path / "simmim_finetune__vit.pth")
    bb = load_backbone(tmp_path / "simmim_finetune__vit.pth", "from-keys")   # no --trust-checkpoint: yacs is data
    rep = bb.report
    assert (rep.layout, rep.family, rep.coverage, rep.feature_mode) == ("flat", "simmim-finetuned", 1.0, "pool")
    assert rep.preprocessing["mean"] == IMAGENET_MEAN and rep.preprocessing["interpolation"] == "bicubic"
    assert "yacs.config.CfgNode" in rep.pickle_globals
    with torch.no_grad():
        feats = bb.features(X32)
        assert feats.shape == (2, 128)              # fc_norm(mean), not the 256-d cat[raw CLS, raw mean]
        _close(feats, ref.forward_features(X32))


def test_finetuned_beit_style_file_without_simmim_marks_is_beits_recipe(tmp_path):
    """The same keys in a bare `model` dict are BEiT's own fine-tuned layout: mean/std 0.5, still fc_norm(mean)."""
    ref = _perturb(SimMIMViT())
    torch.save({"model": ref.state_dict()}, tmp_path / "ft.pth")
    rep = load_backbone(tmp_path / "ft.pth", "from-keys").report
    assert (rep.family, rep.feature_mode, rep.preprocessing["mean"]) == ("beit-finetuned", "pool", (0.5, 0.5, 0.5))


def test_simmim_pretrained_vit_keeps_the_encoder(tmp_path, capsys):
    ref = _perturb(SimMIMPretrain())
    _save_with_yacs(_simmim_save_state(ref), tmp_path / "simmim_pretrain__vit.pth")
    bb = load_backbone(tmp_path / "simmim_pretrain__vit.pth", "from-keys")
    rep = bb.report
    assert (rep.layout, rep.family, rep.coverage, rep.feature_mode) == ("simmim", "simmim", 1.0, "cls")
    assert set(rep.dropped) >= {"SimMIM decoder (1x1 conv + pixel shuffle)", "mask token (MAE/BEiT/data2vec)"}
    with torch.no_grad():
        _close(bb.features(X32), ref.encoder.forward_features(X32))
    assert run_cli("inspect", tmp_path / "simmim_pretrain__vit.pth", "--arch", "from-keys") == 0
    assert "pickle global yacs.config.CfgNode (allowlisted)" in capsys.readouterr().out


# ------------------------------------------------------- --trust-checkpoint: dict / list subclasses are stubbed
class History(list):
    """A training library's list subclass (pickled with APPENDS)."""


def test_trusted_load_stubs_dict_and_list_subclasses(tmp_path, capsys, monkeypatch):
    ref = _perturb(SimMIMViT())
    state = {**_simmim_save_state(ref), "history": None}
    with foreign_module("yacs.config", CfgNode=CfgNode), foreign_module("trainlib.logs", History=History):
        state["history"] = History([1.0, 2.0])
        torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(CheckpointError, match="refused to unpickle the global 'trainlib.logs.History'"):
        load_backbone(tmp_path / "ckpt.pth", "from-keys")
    bb = load_backbone(tmp_path / "ckpt.pth", "from-keys", trust_checkpoint=True)
    assert bb.report.stubbed_globals == ["trainlib.logs.History", "yacs.config.CfgNode"]
    assert bb.report.coverage == 1.0 and bb.report.family == "simmim-finetuned"   # the stubbed config is read too
    with torch.no_grad():
        _close(bb.features(X32), ref.forward_features(X32))
    assert run_cli("inspect", tmp_path / "ckpt.pth", "--arch", "from-keys", "--trust-checkpoint") == 0
    out = capsys.readouterr().out
    assert "pickle global yacs.config.CfgNode (stubbed" in out and "trainlib.logs.History (stubbed" in out

    from bench.backbones import _safe_load

    def broken(self, state):
        raise TypeError("cannot set state")
    monkeypatch.setattr(_safe_load._Stub, "__setstate__", broken)   # a stub that cannot take the object's state
    with pytest.raises(CheckpointError) as err:
        load_backbone(tmp_path / "ckpt.pth", "from-keys", trust_checkpoint=True)
    assert "could not rebuild the stubbed" in str(err.value) and "corrupt" not in str(err.value)


# ------------------------------------------------------- mmpretrain / mmselfsup ViT (backbones/vision_transformer.py)
class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(1e-1 * torch.ones(dim))

    def forward(self, x):
        return x * self.weight


class MMEncoderLayer(nn.Module):
    """TransformerEncoderLayer: ln1 → MultiheadAttention(qkv, proj, gamma1) ; ln2 → mmcv FFN(layers.0.0, layers.1,
    gamma2), each added to its input."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj, self.attn.gamma1 = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), LayerScale(dim)
        self.ffn = nn.Module()
        self.ffn.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0)),
                                        nn.Linear(4 * dim, dim), nn.Dropout(0.0))
        self.ffn.gamma2 = LayerScale(dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.attn.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.attn.gamma1(self.attn.proj(a))
        return x + self.ffn.gamma2(self.ffn.layers(self.ln2(x)))


class MMViT(nn.Module):
    """mmpretrain VisionTransformer(out_type='cls_token', final_norm=True): the final `ln1` follows the last layer."""

    def __init__(self, dim=128, depth=2, heads=2, patch=16, img=32):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.projection = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        self.layers = nn.ModuleList(MMEncoderLayer(dim, heads) for _ in range(depth))
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed.projection(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.ln1(x)[:, 0]


def _pre(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def test_mmpretrain_vit_names_load_and_match(tmp_path):
    ref = _perturb(MMViT())
    sd = {**_pre(ref.state_dict(), "backbone."), "neck.decoder_embed.weight": torch.zeros(4, 128),
          "head.fc.weight": torch.zeros(10, 128)}
    torch.save({"meta": {"mmpretrain_version": "1.0.0", "epoch": 300}, "state_dict": sd}, tmp_path / "mm_vit.pth")
    bb = load_backbone(tmp_path / "mm_vit.pth", "from-keys")
    rep = bb.report
    assert (rep.layout, rep.family, rep.coverage, rep.feature_mode) == ("backbone-prefixed", "mmselfsup", 1.0, "cls")
    assert set(rep.dropped) == {"neck", "head"} and any("mmpretrain VisionTransformer" in n for n in rep.notes)
    with torch.no_grad():
        _close(bb.features(X32), ref(X32))
    bad = {**sd, "backbone.layers.0.attn.relative_position_bias_table": torch.zeros(12, 2)}
    torch.save({"meta": {}, "state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="relative_position_bias_table.*no timm equivalent"):
        load_backbone(tmp_path / "bad.pth", "from-keys")     # a name the mapping does not know: refused, named


# ------------------------------------------------------- CNN frameworks: lightly, solo-learn CIFAR, VISSL model zoo
def _tv_resnet(block="basic", layers=(1, 1, 1, 1)):
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    return ResNet(BasicBlock if block == "basic" else Bottleneck, list(layers))


def _cnn_inputs():
    return [torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(s)) for s in (32, 48)]


def test_lightly_sequential_resnet_children(tmp_path):
    """lightly's examples: backbone = nn.Sequential(*list(torchvision resnet.children())[:-1]) beside the heads."""
    backbone = _perturb(nn.Sequential(*list(_tv_resnet().children())[:-1]))
    sd = {**_pre(backbone.state_dict(), "backbone."), "projection_head.layers.0.weight": torch.zeros(8, 512)}
    assert "backbone.4.0.conv1.weight" in sd and "backbone.0.weight" in sd
    torch.save(sd, tmp_path / "lightly_simclr.pth")
    bb = load_backbone(tmp_path / "lightly_simclr.pth", "from-keys")
    rep = bb.report
    assert (rep.layout, rep.family, rep.arch, rep.coverage) == ("backbone-prefixed", "lightly", "resnet18", 1.0)
    with torch.no_grad():
        for x in _cnn_inputs():
            _close(bb.features(x), backbone(x).flatten(1))


def test_solo_learn_cifar_resnet_stem(tmp_path):
    """solo-learn base.py (cifar): conv1 = Conv2d(3, 64, 3, stride 1, padding 2), maxpool = Identity."""
    net = _tv_resnet()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    net.maxpool, net.fc = nn.Identity(), nn.Identity()
    net = _perturb(net)
    sd = {**_pre(net.state_dict(), "backbone."), "projector.0.weight": torch.zeros(16, 512),
          **_pre(net.state_dict(), "momentum_backbone."), "classifier.weight": torch.zeros(10, 512)}
    torch.save({"state_dict": sd, "hyper_parameters": {"lr": 0.4}, "pytorch-lightning_version": "2.0.0"},
               tmp_path / "solo_cifar.ckpt")
    bb = load_backbone(tmp_path / "solo_cifar.ckpt", "from-keys")
    rep = bb.report
    assert (rep.family, rep.arch, rep.coverage, rep.model_kwargs.get("cifar_stem")) == ("lightning", "resnet18", 1.0, 2)
    assert any("CIFAR stem" in n for n in rep.notes)
    with torch.no_grad():
        for x in _cnn_inputs():
            _close(bb.features(x), net(x))
    from bench.backbones._assemble import plan_model
    from bench.backbones.families import family_spec
    plan = plan_model(dict(bb.model.state_dict()), "resnet18", family_spec("lightning"), "x")   # a stock --arch too
    assert plan.kwargs["cifar_stem"] == 2


def test_vissl_model_zoo_trunk(tmp_path):
    """extra_scripts/convert_*: {"model_state_dict": {"_feature_blocks.<torchvision name>": ...}} (RN50 trunks)."""
    net = _tv_resnet("bottleneck")
    net.fc = nn.Identity()
    net = _perturb(net)
    torch.save({"model_state_dict": _pre(net.state_dict(), "_feature_blocks.")}, tmp_path / "rn50_jigsaw.torch")
    bb = load_backbone(tmp_path / "rn50_jigsaw.torch", "from-keys")
    assert (bb.report.layout, bb.report.family, bb.report.arch, bb.report.coverage) == ("vissl", "vissl", "resnet50",
                                                                                      1.0)
    with torch.no_grad():
        for x in _cnn_inputs():
            _close(bb.features(x), net(x))


# ------------------------------------------------------- SimMIM Swin (models/swin_transformer.py = microsoft Swin)
def _windows(x, w):
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, c)


def _unwindows(win, w, h, wd):
    b = win.shape[0] // ((h // w) * (wd // w))
    return win.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, -1)


class MSWindowAttention(nn.Module):
    def __init__(self, dim, heads, w):
        super().__init__()
        self.heads, self.w = heads, w
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
        ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        self.register_buffer("relative_position_index",
                             (ys[:, None] - ys[None] + w - 1) * (2 * w - 1) + (xs[:, None] - xs[None] + w - 1))
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x, mask):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1).permute(
            2, 0, 1)
        if mask is not None:
            attn = (attn.view(-1, len(mask), self.heads, n, n) + mask[None, :, None]).view(b, self.heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class MSSwinBlock(nn.Module):
    def __init__(self, dim, heads, res, w, shift):
        super().__init__()
        if res <= w:                      # the window covers the map: no shift (as Swin's block does)
            w, shift = res, 0
        self.w, self.shift, self.res = w, shift, res
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MSWindowAttention(dim, heads, w)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        if shift:
            region = torch.zeros(1, res, res, 1)
            cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
            for i, (hs, ws) in enumerate((hs, ws) for hs in cuts for ws in cuts):
                region[:, hs, ws] = i
            win = _windows(region, w).squeeze(-1)
            self.register_buffer("attn_mask", (win[:, None] - win[:, :, None]).ne(0).float() * -100.0)
        else:
            self.attn_mask = None

    def forward(self, x):
        b, n, c = x.shape
        y = self.norm1(x).view(b, self.res, self.res, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = _unwindows(self.attn(_windows(y, self.w), self.attn_mask), self.w, self.res, self.res)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, n, c)
        return x + self.mlp(self.norm2(x))


class MSPatchMerging(nn.Module):
    def __init__(self, dim, res):
        super().__init__()
        self.res = res
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        b, _, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class MSSwin(nn.Module):
    """Swin-T (96, depths 2-2-6-2) as microsoft/Swin-Transformer builds it: each stage's PatchMerging closes it."""

    def __init__(self, img=192, w=6, dim=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), num_classes=0):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj, self.patch_embed.norm = nn.Conv2d(3, dim, 4, 4), nn.LayerNorm(dim)
        self.layers = nn.ModuleList()
        res = img // 4
        for i, (d, h) in enumerate(zip(depths, heads)):
            stage = nn.Module()
            stage.blocks = nn.ModuleList(MSSwinBlock(dim, h, res, w, 0 if j % 2 == 0 else w // 2) for j in range(d))
            if i < len(depths) - 1:
                stage.downsample = MSPatchMerging(dim, res)
                dim, res = dim * 2, res // 2
            self.layers.append(stage)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x):
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        for stage in self.layers:
            for blk in stage.blocks:
                x = blk(x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        return self.norm(x).mean(1)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_simmim_swin_loads_with_arch_through_timms_swin_filter(stage, tmp_path):
    """Pre-trained: SimMIM module (encoder = Swin + mask_token, window 6 at 192 px, decoder); fine-tuned: the bare
    Swin with its head (window 7 at 224 px). Neither names its architecture: --arch swin_tiny_patch4_window7_224."""
    torch.manual_seed(0)
    if stage == "pretrain":   # SimMIM pre-trains at 192 px, window 6; 64 px, window 2 keeps the test fast
        ref = _perturb(MSSwin(img=64, w=2))
        model = nn.Module()
        model.encoder, model.decoder = ref, nn.Sequential(nn.Conv2d(768, 32 ** 2 * 3, 1), nn.PixelShuffle(32))
        model.encoder.mask_token = nn.Parameter(torch.zeros(1, 1, 96))
        size = 64
    else:
        model = ref = _perturb(MSSwin(img=224, w=7, num_classes=10))
        size = 224
    state = {**_simmim_save_state(model), "config": _simmim_config("swin", size)}
    _save_with_yacs(state, tmp_path / f"simmim_{stage}__swin_tiny.pth")
    with pytest.raises(CheckpointError, match="pass --arch"):
        load_backbone(tmp_path / f"simmim_{stage}__swin_tiny.pth")
    bb = load_backbone(tmp_path / f"simmim_{stage}__swin_tiny.pth", "swin_tiny_patch4_window7_224")
    rep = bb.report
    assert rep.coverage == 1.0 and rep.feature_mode == "pool" and rep.preprocessing["mean"] == IMAGENET_MEAN
    if stage == "pretrain":   # the window the file was trained with, read from its tables, not resized to 7
        assert rep.layout == "simmim" and rep.model_kwargs["window_size"] == 2 and rep.model_kwargs["img_size"] == 64
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        _close(bb.features(x), ref.forward_features(x))


# ------------------------------------------------------- EsViT (microsoft/esvit main_esvit.py)
def test_esvit_swin_teacher_with_its_heads_inside(tmp_path):
    """EsViT sets `head` (DINO head) and `head_dense` (region head) on the Swin itself: teacher/student hold the
    Swin's keys beside them, with no `backbone.` prefix."""
    import argparse
    teacher = _perturb(MSSwin(img=224, w=7))    # EsViT Swin-T: window 7 at 224 px
    heads = nn.Module()
    heads.head = nn.Sequential()
    heads.head.mlp, heads.head.last_layer = nn.Linear(768, 32), nn.Linear(32, 64)
    heads.head_dense = nn.Sequential()
    heads.head_dense.mlp = nn.Linear(768, 32)
    net = {**teacher.state_dict(), **heads.state_dict()}
    obj = {"teacher": net, "student": {f"module.{k}": v + 1 for k, v in net.items()}, "epoch": 300,
           "optimizer": {"state": {}}, "args": argparse.Namespace(arch="swin_tiny", window_size=7),
           "dino_loss": {"center": torch.zeros(1, 64)}}
    torch.save(obj, tmp_path / "esvit_swin_tiny.pth")
    with pytest.raises(CheckpointError, match="pass --arch"):
        load_backbone(tmp_path / "esvit_swin_tiny.pth")
    bb = load_backbone(tmp_path / "esvit_swin_tiny.pth", "swin_tiny_patch4_window7_224")
    rep = bb.report
    assert (rep.layout, rep.family, rep.ckpt_key, rep.coverage) == ("teacher-student", "esvit", "teacher", 1.0)
    assert {"SSL projection head (DINO/iBOT head)", "EsViT region head (head_dense)"} <= set(rep.dropped)
    assert rep.model_kwargs["window_size"] == 7 and rep.feature_mode == "pool"
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(224))
    with torch.no_grad():
        _close(bb.features(x), teacher.forward_features(x))
