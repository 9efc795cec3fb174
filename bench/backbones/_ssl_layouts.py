"""The published SSL checkpoint layouts (research/checkpoints.md, "Key-layout patterns"), in detection order.

Every layout is tried; two matches is an error (layouts.detect_layout). What each drops is listed by group.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from ..errors import CheckpointError
from ._arch import arch_kind
from ._framework_keys import is_mm_vit, is_sequential_resnet, mm_vit_to_timm, sequential_resnet_to_tv
from .layouts import (Converted, register_layout, single_backbone, split_groups, strip_prefix, tensors_only)
from .pos_embed import is_mocov3_sincos

# Extras of single-backbone files, by group. `mask_token` of DINOv2 is dropped later, by the DINOv2 conversion.
_EXTRAS = {
    "classifier head": ("fc.", "head.weight", "head.bias", "heads.", "head_dist."),
    "SSL projection head (DINO/iBOT head)": ("head.mlp.", "head.last_layer", "head.last_norm"),
    "SwAV/DC-v2 projection head": ("projection_head.",),
    "SwAV/DC-v2 prototypes": ("prototypes",),
    "MAE decoder": ("decoder_", "decoder."),
    "masked-image token (iBOT masked_embed)": ("masked_embed",),
    "BEiT lm head": ("lm_head.",),
    "BEiT-v2 patch aggregation layers": ("cls_pt_layers.", "cls_pt_norm.", "cls_pt_lm_head."),
}


def _extras(sd: Mapping[str, torch.Tensor], keep_mask_token: bool) -> tuple[dict, dict]:
    groups = dict(_EXTRAS)
    if not keep_mask_token:
        groups["mask token (MAE/BEiT/data2vec)"] = ("mask_token",)
    return split_groups(sd, groups)


_BN_STATS = ("running_mean", "running_var")


def haiku_converted(sd: Mapping[str, torch.Tensor]) -> bool:
    """A ResNet converted from Haiku by ajtejankar/byol-convert, recognised by how the file was written, since its
    keys are torchvision's: every conv kernel is still a permuted view of Haiku's HWIO array (torch.save keeps the
    strides), and all BN running statistics follow all parameters (convert.py writes `online_params`, then
    `online_state`), with no num_batches_tracked. tonylins' SimCLR converter also leaves HWIO views, but it saves a
    torch module's state dict: module order, num_batches_tracked, and SimCLR's TF ResNet pads like torch."""
    convs = [t for t in sd.values() if t.dim() == 4]
    if not convs or any(k.endswith("num_batches_tracked") for k in sd):
        return False
    if not all(not t.is_contiguous() and t.permute(2, 3, 1, 0).is_contiguous() for t in convs):
        return False
    order = [k.endswith(_BN_STATS) for k in sd]
    return any(order) and order.index(True) == len(order) - sum(order)


def simmim_container(obj) -> bool:
    """microsoft/SimMIM utils.save_checkpoint: `model` beside `max_accuracy`, `lr_scheduler` and the yacs `config`
    (read as a plain mapping: _safe_load allowlists yacs' CfgNode as an OrderedDict)."""
    cfg = obj.get("config")
    return isinstance(obj.get("model"), Mapping) and (
        "max_accuracy" in obj or (isinstance(cfg, Mapping) and "MODEL" in cfg and "DATA" in cfg))


def _flat_family(kind: str | None, sd: Mapping[str, torch.Tensor], dropped: dict) -> str:
    """What the keys alone reveal; a registry entry can name the method more precisely."""
    if kind == "dinov2":
        return "dinov2"
    if kind == "beit":
        if any(g.startswith("BEiT-v2") for g in dropped):
            return "beit-v2"
        return "beit-finetuned" if "fc_norm.weight" in sd else "beit"
    if kind == "vit":
        if "MAE decoder" in dropped:
            return "mae"
        if "fc_norm.weight" in sd and "norm.weight" not in sd:
            return "mae-finetuned"
        if is_mocov3_sincos(sd.get("pos_embed")):
            return "moco-v3"   # only MoCo v3 keeps its fixed sin-cos table (convert_to_deit.py output, 12 heads)
        if "masked-image token (iBOT masked_embed)" in dropped or "SSL projection head (DINO/iBOT head)" in dropped:
            return "ibot"   # iBOT's released backbone files keep the projection head; DINO's do not
        return "timm-vit"
    if any(g.startswith("SwAV") for g in dropped):
        return "swav" if "prototypes.weight" in dropped.get("SwAV/DC-v2 prototypes", []) else "deepcluster-v2/sela-v2"
    if kind == "resnet" and haiku_converted(sd):
        return "byol"   # the only Haiku ResNet among the published SSL checkpoints; it pads 'SAME'
    return "torchvision-resnet"


def _backbone(sd: Mapping[str, torch.Tensor], family: str | None = None, **kw) -> Converted:
    """Drop the single-backbone extras and name the family from the remaining keys."""
    kind = arch_kind(sd)
    kept, dropped = _extras(sd, keep_mask_token=kind == "dinov2")
    return Converted(kept, family or _flat_family(arch_kind(kept), kept, dropped), dropped, **kw)


# 1. Flat timm/torchvision dict: bare, or under model / state_dict / module (MAE, DINO, DINOv2, BEiT, iBOT,
#    torchvision, tonylins SimCLR, converted BYOL, Barlow/VICReg backbone files).
def _flat_matches(obj) -> bool:
    sd = single_backbone(obj)
    return sd is not None and arch_kind(sd) not in (None, "deepcluster")


def _flat_convert(obj, opts) -> Converted:
    conv = _backbone(single_backbone(obj))
    if conv.family in ("beit", "beit-finetuned") and simmim_container(obj):
        # SimMIM's ViT is BEiT's code (q/v bias, layerscale, relative positions), fine-tuned with ImageNet mean/std
        conv.family = "simmim-finetuned" if conv.family == "beit-finetuned" else "simmim"
    return conv


register_layout("flat", "timm ViT / DINOv2 / BEiT / torchvision ResNet keys, bare or under model/state_dict/module")(
    (_flat_matches, _flat_convert))


# 2. DDP-wrapped flat ResNet/ViT with SSL heads: SwAV, DeepCluster-v2, SeLa-v2 (`module.` on every key).
def _module_matches(obj) -> bool:
    sd = single_backbone(obj)
    return bool(sd) and all(k.startswith("module.") for k in sd) and arch_kind(strip_prefix(sd, "module.")) is not None


def _module_convert(obj, opts) -> Converted:
    conv = _backbone(strip_prefix(single_backbone(obj), "module."))
    if conv.family in ("torchvision-resnet", "timm-vit"):
        conv.family = "ddp-wrapped"
    return conv


register_layout("module-prefixed", "`module.` + ResNet/ViT, SwAV/DC-v2/SeLa-v2 projection_head/prototypes")(
    (_module_matches, _module_convert))


def _encoder_layout(name: str, prefix: str, family: str, drop: dict[str, tuple[str, ...]], doc: str) -> None:
    """Two-network training checkpoints (`state_dict` with `module.<encoder>.*`): keep the encoder, drop the rest."""
    def matches(obj) -> bool:
        sd = single_backbone(obj)
        return bool(sd) and any(k.startswith(prefix) for k in sd)

    def convert(obj, opts) -> Converted:
        sd = single_backbone(obj)
        others = sorted(k for k in sd if not k.startswith(prefix))
        rest, dropped = split_groups({k: sd[k] for k in others}, drop)
        if rest:
            dropped["other training state"] = sorted(rest)
        enc, head_drop = split_groups(strip_prefix({k: v for k, v in sd.items() if k.startswith(prefix)}, prefix),
                                      {"projection head / MLP (encoder fc/head)": ("fc.", "head.")})
        dropped.update(head_drop)
        notes = [f"file says arch={obj['arch']}"] if isinstance(obj.get("arch"), str) else []
        return Converted(enc, family, dropped, notes=notes)

    register_layout(name, doc)((matches, convert))


_encoder_layout("moco-v1/v2", "module.encoder_q.", "moco-v1/v2",
                {"momentum encoder": ("module.encoder_k.",), "queue": ("module.queue", "module.queue_ptr")},
                "MoCo v1/v2 state_dict: module.encoder_q (kept), encoder_k, queue")
_encoder_layout("moco-v3", "module.base_encoder.", "moco-v3",
                {"momentum encoder": ("module.momentum_encoder.",), "predictor": ("module.predictor.",)},
                "MoCo v3 state_dict: module.base_encoder (kept), momentum_encoder, predictor")
_encoder_layout("simsiam", "module.encoder.", "simsiam", {"predictor": ("module.predictor.",)},
                "SimSiam state_dict: module.encoder (kept; its fc is the projector), predictor")
_encoder_layout("module-backbone", "module.backbone.", "barlow-twins/vicreg",
                {"projector": ("module.projector.",), "projector batch-norm": ("module.bn.",)},
                "Barlow Twins / VICReg full checkpoint: model with module.backbone (kept), projector, bn")


# 7. Lightning (solo-learn, lightly) and mmselfsup/mmpretrain: `backbone.*` next to projector/neck/head.
def _prefixed_matches(obj) -> bool:
    sd = single_backbone(obj)
    return bool(sd) and any(k.startswith("backbone.") for k in sd)


def _prefixed_convert(obj, opts) -> Converted:
    sd = single_backbone(obj)
    backbone = strip_prefix({k: v for k, v in sd.items() if k.startswith("backbone.")}, "backbone.")
    notes, renamed_from = [], None
    if is_mm_vit(backbone):
        backbone, renamed_from = mm_vit_to_timm(backbone), "mmpretrain VisionTransformer"
    elif is_sequential_resnet(backbone):
        backbone, renamed_from = sequential_resnet_to_tv(backbone), "nn.Sequential(*resnet.children()[:-1])"
    if renamed_from:
        notes.append(f"backbone keys renamed from {renamed_from} to timm/torchvision names")
    dropped: dict[str, list[str]] = {}
    for k in sorted(sd):
        if not k.startswith("backbone."):
            dropped.setdefault(k.split(".")[0], []).append(k)
    family = "lightning" if ("hyper_parameters" in obj or "pytorch-lightning_version" in obj) else \
        "mmselfsup" if "meta" in obj else "lightly" if renamed_from and "Sequential" in renamed_from else None
    conv = _backbone(backbone, family)
    conv.dropped = {**dropped, **conv.dropped}
    conv.notes.extend(notes)
    return conv


register_layout("backbone-prefixed", "Lightning / mmselfsup state_dict with backbone.* (+ projector, neck, head)")(
    (_prefixed_matches, _prefixed_convert))


# 8. DINO / iBOT full checkpoint: teacher and student, each [module.]backbone.* + head.*; teacher by default.
def _selfdistill_matches(obj) -> bool:
    return isinstance(obj.get("teacher"), Mapping) and isinstance(obj.get("student"), Mapping)


def _selfdistill_convert(obj, opts) -> Converted:
    key = opts.get("ckpt_key") or "teacher"
    if key not in ("teacher", "student"):
        raise CheckpointError(f"--ckpt-key {key!r}: a DINO/iBOT checkpoint holds 'teacher' and 'student'")
    sd = strip_prefix(tensors_only(obj[key]), "module.")     # student always, ResNet teacher too (DDP)
    if not any(k.startswith("backbone.") for k in sd):
        return _esvit_convert(obj, sd, key)
    head = {k: v for k, v in sd.items() if not k.startswith("backbone.")}
    conv = _backbone(strip_prefix({k: v for k, v in sd.items() if k.startswith("backbone.")}, "backbone."))
    if head:
        conv.dropped["SSL projection head (DINO/iBOT head)"] = sorted(head)
    conv.family = "dino" if "dino_loss" in obj else "ibot" if "ibot_loss" in obj else "dino-or-ibot"
    conv.ckpt_key = key
    conv.dropped.update({f"{other} (other network)": [f"{other}.*"] for other in ("teacher", "student")
                         if other != key})
    return conv


def _esvit_convert(obj, sd, key) -> Converted:
    """EsViT (microsoft/esvit main_esvit.py): the DINO heads are attributes of the network itself (`head`, and
    `head_dense` for the region-level loss), so teacher/student hold the Swin's own keys beside `head.*`."""
    kept, dropped = split_groups(sd, {"SSL projection head (DINO/iBOT head)": ("head.",),
                                      "EsViT region head (head_dense)": ("head_dense.",)})
    conv = Converted(kept, "esvit", dropped, ckpt_key=key, model_kwargs=swin_window_kwargs(kept))
    conv.dropped.update({f"{other} (other network)": [f"{other}.*"] for other in ("teacher", "student")
                         if other != key})
    return conv


register_layout("teacher-student", "DINO / iBOT / EsViT full checkpoint: teacher (default) or student",
                selects_key=True)(
    (_selfdistill_matches, _selfdistill_convert))


# 9. data2vec pretraining: model (student) + model_ema (teacher), BEiT layout, plus args.
def _data2vec_matches(obj) -> bool:
    return isinstance(obj.get("model"), Mapping) and isinstance(obj.get("model_ema"), Mapping)


def _data2vec_convert(obj, opts) -> Converted:
    key = opts.get("ckpt_key") or "model"    # data2vec's fine-tuning code and the HF conversion read `model`
    if key not in ("model", "model_ema"):
        raise CheckpointError(f"--ckpt-key {key!r}: a data2vec checkpoint holds 'model' and 'model_ema'")
    conv = _backbone(tensors_only(obj[key]), "data2vec", ckpt_key=key)
    other = "model_ema" if key == "model" else "model"
    conv.dropped[f"{other} (other network)"] = [f"{other}.*"]
    return conv


register_layout("model+model_ema", "data2vec pretraining checkpoint: model (default) or model_ema",
                selects_key=True)((_data2vec_matches, _data2vec_convert))


# 10. VISSL classy checkpoint: classy_state_dict.base_model.model.trunk with `_feature_blocks.`.
def _vissl_trunk(obj) -> Mapping | None:
    """The trunk of a VISSL training checkpoint, or of its converted model-zoo files (extra_scripts/convert_*:
    `{"model_state_dict": {"_feature_blocks.*": ...}}`, the Goyal et al. 2019 benchmark trunks)."""
    flat = obj.get("model_state_dict")
    if isinstance(flat, Mapping) and flat and all(str(k).startswith("_feature_blocks.") for k in flat):
        return flat
    try:
        return obj["classy_state_dict"]["base_model"]["model"]["trunk"]
    except (KeyError, TypeError):
        return None


def _vissl_convert(obj, opts) -> Converted:
    trunk = strip_prefix(tensors_only(_vissl_trunk(obj)), "_feature_blocks.")
    heads = {} if "model_state_dict" in obj else obj["classy_state_dict"]["base_model"]["model"].get("heads") or {}
    trunk, jig = split_groups(trunk, {"jigsaw trunk extras": ("fc1.", "fc2.")})
    conv = _backbone(trunk, "vissl")
    conv.dropped.update(jig)
    if heads:
        conv.dropped["VISSL heads"] = sorted(heads)
    return conv


register_layout("vissl", "VISSL classy_state_dict trunk / model-zoo model_state_dict (_feature_blocks.)")(
    (lambda obj: isinstance(_vissl_trunk(obj), Mapping), _vissl_convert))


# 11. Separius/SimCLRv2-Pytorch conversion: {'resnet': net.*, 'head': ...}; a positional remap for r50_1x_sk0.
_SEPARIUS = [(r"^net\.0\.0\.", "conv1."), (r"^net\.0\.1\.0\.", "bn1."),
             (r"^net\.(\d)\.blocks\.(\d+)\.projection\.shortcut\.", r"layer\1.\2.downsample.0."),
             (r"^net\.(\d)\.blocks\.(\d+)\.projection\.bn\.0\.", r"layer\1.\2.downsample.1."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.0\.", r"layer\1.\2.conv1."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.1\.0\.", r"layer\1.\2.bn1."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.2\.", r"layer\1.\2.conv2."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.3\.0\.", r"layer\1.\2.bn2."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.4\.", r"layer\1.\2.conv3."),
             (r"^net\.(\d)\.blocks\.(\d+)\.net\.5\.0\.", r"layer\1.\2.bn3.")]


def _separius_key(k: str) -> str | None:
    for pat, rep in _SEPARIUS:
        new, n = re.subn(pat, rep, k)
        if n:
            return new
    return None


def _separius_convert(obj, opts) -> Converted:
    sd = tensors_only(obj["resnet"])
    unmapped = sorted(k for k in sd if _separius_key(k) is None and not k.startswith("fc."))
    if unmapped:
        raise CheckpointError(f"SimCLRv2 key {unmapped[0]} has no torchvision name: only r50_1x_sk0 maps onto a "
                              f"torchvision ResNet (sk1 / wider models have no timm equivalent)")
    out = {_separius_key(k): v for k, v in sd.items() if not k.startswith("fc.")}
    dropped = {"classifier head": sorted(k for k in sd if k.startswith("fc."))}
    if isinstance(obj.get("head"), Mapping):
        dropped["SimCLR projection head"] = sorted(f"head.{k}" for k in obj["head"])
    return Converted(out, "simclr", {g: v for g, v in dropped.items() if v})


register_layout("simclrv2-separius", "Separius SimCLRv2-Pytorch: {'resnet': net.*, 'head'} (r50_1x_sk0)")(
    (lambda obj: isinstance(obj.get("resnet"), Mapping) and "net.0.0.weight" in obj["resnet"], _separius_convert))



# 12. DeepCluster v1 checkpoint.pth.tar: arch + state_dict with the DataParallel trunk (features.module.N.*), the
#     Sobel layer, the fc6/fc7 classifier and the cluster top_layer. eval_linear.py's rename drops `.module`.
def _deepcluster_sd(obj) -> dict | None:
    sd = single_backbone(obj)
    if not sd:
        return None
    return {k.replace(".module", ""): v for k, v in sd.items()}


def _deepcluster_matches(obj) -> bool:
    sd = _deepcluster_sd(obj)
    if sd is None:
        return False
    trunk = {k: v for k, v in sd.items() if k.startswith(("features.", "sobel."))}
    # torchvision's own AlexNet / VGG (features.* + classifier.*) has the same names; DeepCluster's files carry
    # its marks: the cluster top layer, the Sobel layer, or the DataParallel trunk (features.module.*)
    marked = any(k.startswith(("top_layer.", "sobel.")) for k in sd) or any(
        "features.module." in k for k in single_backbone(obj))
    return marked and bool(trunk) and arch_kind(trunk) == "deepcluster" and all(
        k.startswith(("features.", "sobel.", "classifier.", "top_layer.")) for k in sd)


def _deepcluster_convert(obj, opts) -> Converted:
    kept, dropped = split_groups(_deepcluster_sd(obj), {"classifier (fc6/fc7)": ("classifier.",),
                                                        "cluster top layer": ("top_layer.",)})
    notes = [f"file says arch={obj['arch']}"] if isinstance(obj.get("arch"), str) else []
    return Converted(kept, "deepcluster", dropped, notes=notes)


register_layout("deepcluster-v1", "DeepCluster v1 checkpoint: features.module.* (AlexNet/VGG-16) + Sobel, "
                                  "classifier, top_layer")((_deepcluster_matches, _deepcluster_convert))


# 12b. torchvision's own AlexNet / VGG state dict (features.N.* + classifier.N.*, e.g. alexnet-owt-7be5be79.pth):
#      the supervised classifier ImageNet-C/-P normalise by. The last Linear is the ImageNet head (dropped from the
#      backbone; `--classifier own` reads it from the file), fc6/fc7 stay: bench's tv:alexnet / tv:vgg16 keep them.
def _tv_features_classifier_matches(obj) -> bool:
    sd = single_backbone(obj)
    return bool(sd) and not _deepcluster_matches(obj) and any(k.startswith("classifier.") for k in sd) and \
        all(re.match(r"(features|classifier)\.\d+\.(weight|bias)$", k) for k in sd) and \
        getattr(sd.get("features.0.weight"), "ndim", 0) == 4


def _tv_features_classifier_convert(obj, opts) -> Converted:
    sd = single_backbone(obj)
    last = max(int(k.split(".")[1]) for k in sd if k.startswith("classifier."))
    kept, dropped = split_groups(sd, {"ImageNet classifier head": (f"classifier.{last}.",)})
    return Converted(kept, "torchvision-supervised", dropped)


register_layout("torchvision-alexnet-vgg", "torchvision AlexNet / VGG: features.N.* + classifier.N.* (last Linear "
                                           "= ImageNet head)")((_tv_features_classifier_matches,
                                                                _tv_features_classifier_convert))


# 13. UM-MAE's own pyramid ViTs (implus/UM-MAE: models_pvt.py / models_swin.py fine-tuned, models_mae_pvt.py /
#     models_mae_swin.py pre-trained; main_*.py save {'model', 'optimizer', 'epoch', 'scaler', 'args'}). Recognised
#     only to refuse them with the reason: their blocks exist in no timm model, so loading the tensors whose names
#     fit timm's pvt_v2 / swin would run a network UM-MAE never trained.
_UM_MAE_DOWNSAMPLE = re.compile(r"blocks\.(\d+)\.downsample\.proj\.weight$")


def um_mae_kind(obj) -> str | None:
    """"pvt" / "swin" for a UM-MAE PVT / Swin file (flat `blocks.N` with PatchMerge `downsample`), else None."""
    sd = single_backbone(obj) if isinstance(obj, Mapping) else None
    if not sd or "blocks.0.norm1.weight" not in sd or not any(_UM_MAE_DOWNSAMPLE.match(k) for k in sd):
        return None
    if "blocks.0.attn.posmlp.0.weight" in sd:
        return "swin"
    if "blocks.0.attn.sr.weight" in sd and "blocks.0.attn.kv.weight" in sd:
        return "pvt"
    return None


def um_mae_stages(sd: Mapping[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(depth, width) per stage: a PatchMerge `downsample` opens every stage after the first."""
    n = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    starts = [0] + sorted(int(m.group(1)) for k in sd if (m := _UM_MAE_DOWNSAMPLE.match(k)))
    ends = starts[1:] + [n]
    return [(e - s, int(sd[f"blocks.{s}.norm1.weight"].shape[0])) for s, e in zip(starts, ends)]


_UM_MAE_DIFF = {
    "pvt": ("timm's pvt_v2", "non-overlapping 4×4 / 2×2 patch embeddings (PVT v2: 7×7 / 3×3 overlapping), spatial "
            "reduction by average pooling + 1×1 conv (v2: a strided r×r conv), a learnt absolute pos_embed, MLPs "
            "without the depth-wise conv and no per-stage norms"),
    "swin": ("timm's swin", "a relative-position MLP (attn.posmlp) instead of the bias table and a PatchMerge of "
             "LayerNorm(C) + 2×2 conv (Swin: LayerNorm(4C) + linear)"),
}


def _um_mae_convert(obj, opts) -> Converted:
    kind = um_mae_kind(obj)
    stages = um_mae_stages(single_backbone(obj))
    timm_name, diff = _UM_MAE_DIFF[kind]
    raise CheckpointError(
        f"UM-MAE's own {kind.upper() if kind == 'pvt' else 'Swin'} (implus/UM-MAE models_[mae_]{kind}.py; "
        f"depths {[d for d, _ in stages]}, widths {[w for _, w in stages]}) is not {timm_name}: {diff}; no bench "
        f"backbone builds it. Evaluate it with UM-MAE's SEG/ and DET/ code; bench's upernet-um-mae-* presets run "
        f"timm's pvt_v2_b2 / swin_tiny_patch4_window7_224 from a timm checkpoint")


register_layout("um-mae-pyramid", "UM-MAE PVT / Swin (blocks.N + PatchMerge downsample): recognised and refused, "
                                  "no timm model has their blocks")((lambda obj: um_mae_kind(obj) is not None,
                                                                     _um_mae_convert))


# 14. SimMIM pre-training checkpoint (microsoft/SimMIM main_simmim.py → utils.save_checkpoint): `model` holds the
#     SimMIM module, `encoder.*` (ViT: BEiT-style keys + mask_token; Swin: Swin-Transformer keys + mask_token) and
#     `decoder.0.*` (1×1 conv before the pixel shuffle), beside optimizer, lr_scheduler, max_accuracy and the config.
def _simmim_matches(obj) -> bool:
    sd = single_backbone(obj)
    return bool(sd) and any(k.startswith("encoder.") for k in sd) and any(k.startswith("decoder.") for k in sd) \
        and all(k.startswith(("encoder.", "decoder.")) for k in sd)


def swin_window_kwargs(sd: Mapping[str, torch.Tensor], img_size: int | None = None) -> dict:
    """A Swin's window, read from its first relative-position table ((2W-1)² rows), and the image side when the
    file's config gives it: timm then builds the windows the file was trained with instead of resizing tables."""
    table = sd.get("layers.0.blocks.0.attn.relative_position_bias_table")
    if table is None:
        return {}
    window = (int(round(table.shape[0] ** 0.5)) + 1) // 2
    return {"window_size": window, **({"img_size": int(img_size)} if img_size else {})}


def _config_img_size(obj) -> int | None:
    cfg = obj.get("config")
    data = cfg.get("DATA") if isinstance(cfg, Mapping) else None
    return data.get("IMG_SIZE") if isinstance(data, Mapping) else None


def _simmim_convert(obj, opts) -> Converted:
    sd = single_backbone(obj)
    enc = strip_prefix({k: v for k, v in sd.items() if k.startswith("encoder.")}, "encoder.")
    conv = _backbone(enc, "simmim")
    conv.dropped["SimMIM decoder (1x1 conv + pixel shuffle)"] = sorted(k for k in sd if k.startswith("decoder."))
    if arch_kind(conv.state_dict) is None:   # Swin: timm's swin filter maps it under --arch; the mask token goes
        kept, mask = split_groups(conv.state_dict, {"mask token (MAE/BEiT/data2vec)": ("mask_token",)})
        conv.state_dict, conv.model_kwargs = kept, swin_window_kwargs(kept, _config_img_size(obj))
        conv.dropped.update(mask)
    return conv


register_layout("simmim", "SimMIM pre-training: model with encoder.* (kept) and decoder.* (dropped)")(
    (_simmim_matches, _simmim_convert))
