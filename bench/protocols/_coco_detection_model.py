"""Mask R-CNN (torchvision `maskrcnn_resnet50_fpn`'s construction) over any bench backbone with hierarchical maps.

- ResNets (conv1, layer1…layer4): torchvision's `BackboneWithFPN` on layer1…layer4 (strides 4–32), as
  `maskrcnn_resnet50_fpn` and mmdet's `mask_rcnn_r50_fpn.py`.
- Pyramid ViTs (PVT v2, Swin) and any timm model whose `forward_intermediates` yields four maps at strides
  4–32: `PyramidFPN` feeds those maps to torchvision's FeaturePyramidNetwork (mmdet's FPN neck on
  PVT/Swin: in_channels = the four stage widths, 256 out, max-pool P6).
The heads are torchvision's: RPN (anchors 32…512 × 0.5/1/2, one size per level), 7 × 7 MultiScaleRoIAlign +
two-FC box head, 14 × 14 RoIAlign + four-conv mask head with a 2× deconvolution (28 × 28 masks).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from ..errors import BenchError
from ._detection_model import _apply_norm, _fpn_parts, _freeze

__all__ = ["PyramidFPN", "build_mask_rcnn", "is_resnet"]


def is_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("conv1", "layer1", "layer2", "layer3", "layer4"))


class PyramidFPN(nn.Module):
    """The last four maps of a timm backbone's `forward_intermediates` → FPN (P2…P5) + max-pool P6."""

    def __init__(self, model: nn.Module, out_channels: int = 256):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
        if not hasattr(model, "forward_intermediates"):
            raise BenchError(f"{type(model).__name__} has no forward_intermediates(); coco_detection needs a "
                             f"ResNet or a timm hierarchical backbone (pvt_v2_*, swin_*)")
        if getattr(model, "num_prefix_tokens", 0) > 0:
            raise BenchError(f"{type(model).__name__} is a plain ViT (one stride-16 map); coco_detection's FPN "
                             f"needs a hierarchical backbone: a ResNet, PVT or Swin")
        pe = getattr(model, "patch_embed", None)
        if pe is not None and hasattr(pe, "strict_img_size"):
            pe.strict_img_size = False     # detection images have any size (Swin pads to its windows)
        self.body = model
        with torch.no_grad():
            was = model.training
            maps = model.eval().forward_intermediates(torch.zeros(1, 3, 64, 64), intermediates_only=True)[-4:]
            model.train(was)
        strides = [64 // m.shape[-1] for m in maps]
        if strides != [4, 8, 16, 32]:
            raise BenchError(f"{type(model).__name__}'s last four maps have strides {strides}, not 4/8/16/32; "
                             f"coco_detection needs a four-stage pyramid")
        self.fpn = FeaturePyramidNetwork([m.shape[1] for m in maps], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body.forward_intermediates(x, intermediates_only=True)[-4:]
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def build_mask_rcnn(backbone_model: nn.Module, preset: Any, *, mean, std, num_classes: int,
                    distributed: bool = False) -> nn.Module:
    """A torchvision MaskRCNN with `num_classes` foreground classes around (a copy the caller owns of) the
    backbone; norm and freezing as the detection protocol's `norm` / `freeze_at`."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    backbone_model = _apply_norm(backbone_model, preset.norm, distributed)
    _freeze(backbone_model, preset.freeze_at)
    if is_resnet(backbone_model):
        body = _fpn_parts(backbone_model, preset)["backbone"]
    else:
        body = PyramidFPN(backbone_model, preset.fpn_channels)
    width = preset.mask_head_channels
    model = MaskRCNN(
        body, num_classes=num_classes + 1, mask_head=MaskRCNNHeads(body.out_channels, (width,) * 4, 1), min_size=tuple(preset.train_min_sizes), max_size=preset.max_size,
        image_mean=list(mean), image_std=list(std), rpn_pre_nms_top_n_train=preset.rpn_pre_nms_train,
        rpn_post_nms_top_n_train=preset.rpn_post_nms_train, rpn_pre_nms_top_n_test=preset.rpn_pre_nms_test,
        rpn_post_nms_top_n_test=preset.rpn_post_nms_test, box_batch_size_per_image=preset.rois_per_image,
        box_score_thresh=preset.score_thresh, box_nms_thresh=preset.nms_thresh,
        box_detections_per_img=preset.detections_per_image)
    if width != 256:   # torchvision builds the predictor for 256 channels when only the head is given
        model.roi_heads.mask_predictor = MaskRCNNPredictor(width, width, num_classes + 1)
    return model
