"""Recognise the architecture of a backbone state dict and say how to build its timm model.

A layout (layouts.py) finds *where* the backbone is in a file; this module looks at the backbone's own keys and
shapes and decides *what* it is: a timm ViT, a DINOv2 ViT, a BEiT-family ViT or a (torchvision-named) ResNet.
The kinds are mutually exclusive by construction (a test checks every synthetic layout matches exactly one):

- ``beit``: ``blocks.0.attn.q_bias`` or ``blocks.0.gamma_1`` or a relative-position table, and no ``pos_embed``
  requirement (BEiT has none).
- ``dinov2``: ``blocks.0.ls1.gamma`` with a 14×14 patch, or ``register_tokens``, or SwiGLU ``mlp.w12``. A
  ``mask_token`` alone is NOT a DINOv2 signature (MAE ``_full``, BEiT, data2vec and SimMIM have one too;
  timm's own filter gets this wrong, research/checkpoints.md §0.3).
- ``vit``: ``cls_token`` + ``blocks.0.attn.qkv.weight`` and none of the above (layerscale with patch 16 is DeiT-III).
- ``resnet``: ``conv1.weight`` + ``layer1.0.conv1.weight``. timm's ResNet keys equal torchvision's.

The head count is not stored in the weights: it comes from the standard width table (64-d heads, ViT-H 80-d),
and a family that differs (MoCo v3 ViT-S: 12 heads) says so through its family kwargs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError

__all__ = ["ArchGuess", "arch_kind", "guess_arch", "to_timm_keys", "vit_size_name"]

# width → (timm size word, heads, standard depth); ViT paper / DeiT / DINOv2 tables as used by timm.
_VIT_WIDTHS = {192: ("tiny", 3, 12), 384: ("small", 6, 12), 768: ("base", 12, 12), 1024: ("large", 16, 24),
               1280: ("huge", 16, 32), 1536: ("giant", 24, 40)}
_NATIVE_WIDTH = {v[0]: k for k, v in _VIT_WIDTHS.items()}
# Bottleneck / BasicBlock stage block counts → timm/torchvision depth.
_RESNET_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (2, 2, 2, 2)): 26,
                  ("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
                  ("bottleneck", (3, 8, 36, 3)): 152}


@dataclass
class ArchGuess:
    kind: str                                     # vit | dinov2 | beit | resnet
    arch: str | None                              # timm name, None when the shapes fit no known model
    structure: dict[str, Any] = field(default_factory=dict)   # depth/width/img_size kwargs, only with inferred arch
    needs: dict[str, Any] = field(default_factory=dict)       # kwargs the weights need whatever the arch name
    notes: list[str] = field(default_factory=list)
    # why the shapes are not a published configuration (a truncated file looks like a smaller model), else None
    unpublished: str | None = None


def arch_kind(sd: dict[str, torch.Tensor]) -> str | None:
    """The architecture kind of a backbone state dict, or None if it is none of the supported ones."""
    if "blocks.0.attn.q_bias" in sd or "blocks.0.gamma_1" in sd or "rel_pos_bias.relative_position_bias_table" in sd:
        return "beit"
    patch = sd.get("patch_embed.proj.weight")
    if "register_tokens" in sd or "blocks.0.mlp.w12.weight" in sd or (
            "blocks.0.ls1.gamma" in sd and patch is not None and tuple(patch.shape[-2:]) == (14, 14)):
        return "dinov2"
    if "cls_token" in sd and "blocks.0.attn.qkv.weight" in sd and "pos_embed" in sd and "patch_embed.proj.weight" in sd:
        return "vit"   # XCiT (cls_token + qkv, but a conv patch embedding and no pos_embed) is not one
    if "conv1.weight" in sd and "layer1.0.conv1.weight" in sd:
        return "resnet"
    w = sd.get("features.0.weight")
    if w is not None and w.ndim == 4 and all(k.startswith(("features.", "sobel.")) for k in sd):
        return "deepcluster"   # DeepCluster v1 AlexNet / VGG-16 trunk (+ Sobel), after the layout's renaming
    return None


def _depth(sd, pattern: str) -> int:
    return 1 + max((int(m.group(1)) for k in sd if (m := re.match(pattern, k))), default=-1)


def vit_size_name(width: int) -> tuple[str, int, int]:
    """(size word, heads, standard depth) for a ViT width; nonstandard widths borrow 'tiny' with 64-d heads."""
    return _VIT_WIDTHS.get(width, ("tiny", max(1, width // 64), 12))


def _vit_structure(sd, width: int, depth: int, img_size: int, default_img: int) -> dict[str, Any]:
    _, _, std_depth = vit_size_name(width)
    out: dict[str, Any] = {}
    if depth != std_depth:
        out["depth"] = depth
    if img_size != default_img:
        out["img_size"] = img_size
    return out


def _grid_side(n_tokens: int, what: str) -> int:
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise CheckpointError(f"{what} has {n_tokens} patch tokens, not a square grid; pass --arch")
    return side


def _guess_vit(sd, kind: str) -> ArchGuess:
    import timm
    width, patch = sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[-1]
    depth = _depth(sd, r"blocks\.(\d+)\.")
    size, heads, _ = vit_size_name(width)
    needs: dict[str, Any] = {}
    if kind == "dinov2":
        regs = sd.get("register_tokens", sd.get("reg_token"))   # original name / timm's (a bench-converted file)
        reg = regs.shape[1] if regs is not None else 0
        size = "giant" if "blocks.0.mlp.w12.weight" in sd else size   # only ViT-g uses SwiGLU
        size = size if size in ("small", "base", "large", "giant") else "small"
        arch = f"vit_{size}_patch14{'_reg4' if reg == 4 else ''}_dinov2"
        if reg not in (0, 4):
            needs.update(reg_tokens=reg, no_embed_class=True)
        default_img = 518
    else:
        arch = f"vit_{size}_patch{patch}_224"
        if not timm.is_model(arch):
            arch, needs = f"vit_{size}_patch16_224", {"patch_size": patch}
        default_img = 224
        if "blocks.0.ls1.gamma" in sd:
            needs["init_values"] = 1e-5   # any non-None value creates the layerscale modules; the file sets them
    if "fc_norm.weight" in sd:
        needs["global_pool"] = "avg"       # MAE fine-tuned: fc_norm replaces norm (models_vit.py global_pool=True)
    if "norm_pre.weight" in sd:
        needs["pre_norm"] = True           # CLIP-style norm before the blocks (and no patch-embedding bias)
    # Registers are never in pos_embed; timm's register models (reg_token) keep cls out of it too.
    side = _grid_side(sd["pos_embed"].shape[1] - (0 if "reg_token" in sd else 1), "pos_embed")
    structure = _vit_structure(sd, width, depth, side * patch, default_img)
    if _NATIVE_WIDTH.get(size) != width:
        structure.update(embed_dim=width, num_heads=heads)
    return ArchGuess(kind, arch, structure, needs, unpublished=_vit_gap("ViT", width, depth, arch))


def _guess_beit(sd) -> ArchGuess:
    width, patch = sd["cls_token"].shape[-1], sd["patch_embed.proj.weight"].shape[-1]
    depth = _depth(sd, r"blocks\.(\d+)\.")
    size, _, _ = vit_size_name(width)
    shared = "rel_pos_bias.relative_position_bias_table" in sd
    table = sd.get("rel_pos_bias.relative_position_bias_table", sd.get("blocks.0.attn.relative_position_bias_table"))
    needs: dict[str, Any] = {"use_abs_pos_emb": "pos_embed" in sd, "use_shared_rel_pos_bias": shared,
                             "use_rel_pos_bias": (not shared) and table is not None,
                             # BEiT pretrained files keep `norm`; timm's default 'avg' would swap it for fc_norm.
                             "global_pool": "avg" if "fc_norm.weight" in sd else "token",
                             "init_values": 0.1 if "blocks.0.gamma_1" in sd else None}
    img = 224
    if table is not None:   # table rows = (2W-1)² + 3 (cls↔token, token↔cls, cls↔cls)
        img = ((math.isqrt(table.shape[0] - 3) + 1) // 2) * patch
    elif "pos_embed" in sd:
        img = _grid_side(sd["pos_embed"].shape[1] - 1, "pos_embed") * patch
    size = size if size in ("base", "large") else "base"
    arch = f"beit_{size}_patch16_224"
    structure = _vit_structure(sd, width, depth, img, 224)
    if _NATIVE_WIDTH[size] != width:
        structure.update(embed_dim=width, num_heads=vit_size_name(width)[1])
    if patch != 16:
        structure["patch_size"] = patch
    return ArchGuess("beit", arch, structure, needs, unpublished=_vit_gap("BEiT", width, depth, arch))


def _guess_resnet(sd) -> ArchGuess:
    block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
    counts = tuple(_depth(sd, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
    stem = sd["conv1.weight"].shape[0]
    if stem != 64:
        raise CheckpointError(
            f"ResNet with a {stem}-channel stem: a width-multiplied model (SwAV RN50-w2/w4/w5, SimCLR 2x/4x, VICReg "
            f"x2) that widens every layer; timm/torchvision have no such model (wide_resnet50_2 is different)")
    needs, notes = {}, []
    if sd["conv1.weight"].shape[-1] == 3:   # CIFAR stem: 3×3 stride 1, no max-pool (solo-learn base.py `cifar`)
        from ._framework_keys import CIFAR_STEM_PADDING
        needs["cifar_stem"] = CIFAR_STEM_PADDING
        notes.append(f"CIFAR stem: conv1 3x3 stride 1 padding {CIFAR_STEM_PADDING}, no max-pool (solo-learn)")
    depth = _RESNET_DEPTHS.get((block, counts))
    if depth is None:   # timm builds any block counts; the name only fixes the block type
        return ArchGuess("resnet", "resnet50" if block == "bottleneck" else "resnet18", {"layers": counts},
                         needs, notes=notes + [f"{block} ResNet with nonstandard stage blocks {counts}"],
                         unpublished=_resnet_gap(block, counts))
    bottleneck_width = sd["layer1.0.conv1.weight"].shape[0]
    if block == "bottleneck" and bottleneck_width == 128 and depth in (50, 101):
        return ArchGuess("resnet", f"wide_resnet{depth}_2", needs=needs, notes=notes)
    return ArchGuess("resnet", f"resnet{depth}", needs=needs, notes=notes)


def _resnet_gap(block: str, counts: tuple[int, ...]) -> str:
    (_, std), depth = min(((k, d) for k, d in _RESNET_DEPTHS.items() if k[0] == block),
                          key=lambda kd: sum(abs(a - b) for a, b in zip(kd[0][1], counts)))
    missing = [f"layer{i + 1}.{j}.*" for i, (have, want) in enumerate(zip(counts, std)) for j in range(have, want)]
    gap = f"; missing {', '.join(missing[:4])}" if missing else ""
    return (f"a {block} ResNet with stage blocks {counts} is not a published configuration; the nearest is "
            f"resnet{depth} {std}{gap}")


def _vit_gap(what: str, width: int, depth: int, arch: str) -> str | None:
    if width not in _VIT_WIDTHS:
        near = min(_VIT_WIDTHS, key=lambda w: abs(w - width))
        return f"a {what} of width {width} is not a published configuration; the nearest width is {near}"
    std_depth = _VIT_WIDTHS[width][2] if not arch.startswith("beit") else {768: 12, 1024: 24}.get(width, 12)
    if depth == std_depth:
        return None
    gap = "" if depth > std_depth else f"; missing blocks.{depth}.*" + (
        f" to blocks.{std_depth - 1}.*" if std_depth - depth > 1 else "")
    return (f"a depth-{depth} {what} is not a published configuration; the nearest is {arch} with {std_depth} "
            f"blocks{gap}")


def _guess_deepcluster(sd) -> ArchGuess:
    from ._deepcluster import DEEPCLUSTER_ARCHS
    convs = sum(1 for k, v in sd.items() if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4)
    arch = next((a for a, n in DEEPCLUSTER_ARCHS.items() if n == convs), None)
    gap = None if arch else (f"a DeepCluster trunk with {convs} conv layers is not a published configuration; the "
                             f"nearest are AlexNet (5) and VGG-16 (13)")
    return ArchGuess("deepcluster", arch or "deepcluster_alexnet", needs={"sobel": "sobel.0.weight" in sd},
                     unpublished=gap)


def guess_arch(sd: dict[str, torch.Tensor]) -> ArchGuess | None:
    kind = arch_kind(sd)
    if kind == "deepcluster":
        return _guess_deepcluster(sd)
    if kind in ("vit", "dinov2"):
        return _guess_vit(sd, kind)
    if kind == "beit":
        return _guess_beit(sd)
    if kind == "resnet":
        return _guess_resnet(sd)
    return None


def to_timm_keys(sd: dict[str, torch.Tensor], kind: str | None) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Rename a recognised backbone to timm's keys. Returns (state dict, dropped groups)."""
    dropped: dict[str, list] = {}
    sd = dict(sd)
    if kind == "dinov2":
        from timm.models.vision_transformer import _convert_dinov2
        if "mask_token" in sd:
            dropped["mask token"] = ["mask_token"]
        sd = _convert_dinov2(sd, None)   # w12/w3 → fc1/fc2; registers: fold pos_embed[0] into cls (timm's recipe)
    if kind == "beit":
        idx = [k for k in sd if k.endswith("relative_position_index")]
        if idx:
            dropped["relative position index (recomputed)"] = idx
        sd = {k: v for k, v in sd.items() if k not in idx}
    return sd, dropped
