"""Faster R-CNN from torchvision's detection package around a bench backbone: R50-C4, R50-FPN, ViT simple pyramid.

- `c4` (MoCo `detection/configs/Base-RCNN-C4-BN.yaml`, detectron2 R50-C4): the trunk up to res4 (stride 16) feeds
  the RPN (anchors 32…512 × ratios 0.5/1/2 on one map); RoIAlign 14 × 14 on res4, then the backbone's own res5
  (layer4, stride 2 → 7 × 7) plus MoCo's extra BatchNorm (`Res5ROIHeadsExtraNorm`), average pooling, and a linear
  class/box predictor. RPN top-k 12000/2000 (train) and 6000/1000 (test), 512 RoIs per image (detectron2 C4).
- `fpn` (torchvision `fasterrcnn_resnet50_fpn`, detectron2 R50-FPN): `BackboneWithFPN` on layer1…layer4 + max-pool
  P6, torchvision's default anchors, 7 × 7 multi-scale RoIAlign and two-FC box head.
- `vit` (ViTDet, Li et al. 2022, `detectron2:projects/ViTDet` `SimpleFeaturePyramid`): the last block's feature map
  (stride 16) → deconv ×4, deconv ×2, identity, max-pool ×½, each 1×1 + 3×3 conv with LayerNorm to 256 channels,
  plus a max-pool P6; the ViT takes any input size (timm's dynamic image size, position embeddings resampled).
  ViTDet's 4-conv box head, relative position biases and window attention are not reproduced.

Norm (`norm`): "syncbn" = BatchNorm trained in the backbone and res5 head, SyncBatchNorm when DDP is running (MoCo
used detectron2's naiveSyncBN); "frozen" = FrozenBatchNorm2d (torchvision/detectron2 FPN default). `freeze_at`:
0 trains everything (MoCo `FREEZE_AT: 0`), 2 freezes the stem and layer1 (detectron2 default).
detectron2 semantics where MoCo's config needs them (`_d2_parts.py`): `roi_aligned` pools the C4 head with
ROIAlignV2 (aligned=True; torchvision's MultiScaleRoIAlign is aligned=False), and `rpn_smooth_l1_beta` /
`box_smooth_l1_beta` set the box-regression losses' beta (torchvision 1/9; detectron2 0 = L1).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BenchError

__all__ = ["build_detector", "set_test_size", "SimpleFeaturePyramid", "STEM_LAYERS"]

STEM_LAYERS = ("conv1", "bn1", "act1", "relu", "maxpool")   # timm and torchvision ResNet stems


def _require_resnet(model: nn.Module, head: str) -> None:
    missing = [n for n in ("conv1", "layer1", "layer2", "layer3", "layer4") if not hasattr(model, n)]
    if missing:
        raise BenchError(f"detection head {head!r} needs a ResNet-style backbone with conv1 and layer1…layer4 "
                         f"(missing {missing} on {type(model).__name__}); use --preset vit for ViTs")


def _out_channels(layer: nn.Module) -> int:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    return max(c.out_channels for c in convs[-3:])   # the last block's output (bottleneck or basic block)


def _freeze(model: nn.Module, freeze_at: int) -> None:
    """detectron2's FREEZE_AT: 1 = stem, 2 = stem + res2 (layer1); parameters stop training."""
    names = (list(STEM_LAYERS) if freeze_at >= 1 else []) + (["layer1"] if freeze_at >= 2 else [])
    for name in names:
        if hasattr(model, name):
            for p in getattr(model, name).parameters():
                p.requires_grad_(False)


def _c4_parts(model: nn.Module, preset: Any) -> dict[str, Any]:
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    _require_resnet(model, "c4")
    trunk = IntermediateLayerGetter(model, return_layers={"layer3": "0"})   # stops after layer3
    trunk.out_channels = _out_channels(model.layer3)
    c5 = _out_channels(model.layer4)
    box_head = nn.Sequential(model.layer4, *([nn.BatchNorm2d(c5)] if preset.res5_extra_norm else []),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    anchors = AnchorGenerator(sizes=(tuple(preset.anchor_sizes),), aspect_ratios=((0.5, 1.0, 2.0),))
    if preset.roi_aligned:
        from ._detection_d2_parts import RoIAlignV2
        pool = RoIAlignV2("0", output_size=preset.pooler_resolution, sampling_ratio=0)
    else:
        pool = MultiScaleRoIAlign(["0"], output_size=preset.pooler_resolution, sampling_ratio=0)
    return {"backbone": trunk, "rpn_anchor_generator": anchors, "box_roi_pool": pool,
            "box_head": box_head, "box_predictor": FastRCNNPredictor(c5, preset.num_classes + 1)}


def _fpn_parts(model: nn.Module, preset: Any) -> dict[str, Any]:
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
    _require_resnet(model, "fpn")
    layers = ["layer1", "layer2", "layer3", "layer4"]
    body = BackboneWithFPN(model, return_layers={n: str(i) for i, n in enumerate(layers)},
                           in_channels_list=[_out_channels(getattr(model, n)) for n in layers],
                           out_channels=preset.fpn_channels,
                           extra_blocks=LastLevelMaxPool())
    return {"backbone": body, "num_classes": preset.num_classes + 1}


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on a timm ViT: strides 4, 8, 16, 32 (+ 64 by max-pool), 256 channels."""

    def __init__(self, vit: nn.Module, out_channels: int = 256):
        super().__init__()
        from timm.layers import Format, LayerNorm2d
        if not hasattr(vit, "forward_intermediates") or not hasattr(vit, "patch_embed"):
            raise BenchError(f"the vit detection head needs a timm ViT, not {type(vit).__name__}")
        self.vit = vit
        vit.dynamic_img_size = True     # any input size: resample position embeddings (timm), pad to the patch
        vit.patch_embed.strict_img_size, vit.patch_embed.dynamic_img_pad = False, True
        vit.patch_embed.flatten, vit.patch_embed.output_fmt = False, Format("NHWC")
        d = vit.embed_dim
        self.scales = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(d, d // 2, 2, 2), LayerNorm2d(d // 2), nn.GELU(),
                          nn.ConvTranspose2d(d // 2, d // 4, 2, 2)),
            nn.ConvTranspose2d(d, d // 2, 2, 2), nn.Identity(), nn.MaxPool2d(2)])
        self.outputs = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels))
            for c in (d // 4, d // 2, d, d)])
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feat = self.vit.forward_intermediates(x, indices=1, norm=False, output_fmt="NCHW",
                                              intermediates_only=True)[-1]
        out = OrderedDict((str(i), head(scale(feat))) for i, (scale, head) in
                          enumerate(zip(self.scales, self.outputs)))
        out["pool"] = F.max_pool2d(out["3"], 1, 2)   # ViTDet's LastLevelMaxPool (P6)
        return out


def _vit_parts(model: nn.Module, preset: Any) -> dict[str, Any]:
    return {"backbone": SimpleFeaturePyramid(model, preset.fpn_channels), "num_classes": preset.num_classes + 1}


_PARTS = {"c4": _c4_parts, "fpn": _fpn_parts, "vit": _vit_parts}


def _apply_norm(model: nn.Module, norm: str, distributed: bool) -> nn.Module:
    if norm == "frozen":
        from timm.layers import freeze_batch_norm_2d
        return freeze_batch_norm_2d(model)
    if norm == "syncbn" and distributed:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def build_detector(backbone_model: nn.Module, preset: Any, *, mean, std, distributed: bool = False) -> nn.Module:
    """A torchvision FasterRCNN around (a copy the caller owns of) `backbone_model`, per the preset's head."""
    from torchvision.models.detection import FasterRCNN
    if preset.head not in _PARTS:
        raise BenchError(f"unknown detection head {preset.head!r}; choose one of {', '.join(_PARTS)}")
    backbone_model = _apply_norm(backbone_model, preset.norm, distributed)
    _freeze(backbone_model, preset.freeze_at)
    if preset.roi_aligned and preset.head != "c4":
        raise BenchError(f"roi_aligned (ROIAlignV2) is implemented for the c4 head only, not {preset.head!r}; "
                         f"--set roi_aligned=false")
    parts = _PARTS[preset.head](backbone_model, preset)
    model = FasterRCNN(
        **parts, min_size=tuple(preset.train_min_sizes), max_size=preset.max_size, image_mean=list(mean),
        image_std=list(std), rpn_pre_nms_top_n_train=preset.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=preset.rpn_post_nms_train, rpn_pre_nms_top_n_test=preset.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=preset.rpn_post_nms_test, box_batch_size_per_image=preset.rois_per_image,
        box_score_thresh=preset.score_thresh, box_nms_thresh=preset.nms_thresh,
        box_detections_per_img=preset.detections_per_image)
    from ._detection_d2_parts import set_box_loss
    set_box_loss(model, preset.rpn_smooth_l1_beta, preset.box_smooth_l1_beta)
    if preset.head == "c4" and preset.norm == "syncbn" and distributed:   # the extra res5 norm too
        model.roi_heads.box_head = nn.SyncBatchNorm.convert_sync_batchnorm(model.roi_heads.box_head)
    return model


def set_test_size(model: nn.Module, test_size: int, max_size: int) -> None:
    """At eval GeneralizedRCNNTransform resizes the short side to min_size[-1]: make that the test size."""
    model.transform.min_size = (test_size,)
    model.transform.max_size = max_size
