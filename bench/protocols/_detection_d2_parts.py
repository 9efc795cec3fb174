"""detectron2 behaviour on torchvision's Faster R-CNN, where MoCo's config departs from torchvision's defaults.

- Box-regression loss: torchvision fixes smooth-L1 with beta 1/9 in the RPN and the box head; detectron2's
  `MODEL.RPN.SMOOTH_L1_BETA` and `MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA` default to 0.0 (defaults.py), i.e. L1
  (fvcore's smooth_l1_loss returns |x| for beta < 1e-5; torch's with beta=0 is the same). Normalisers stay
  torchvision's: the RPN divides by the sampled anchors (detectron2: 256 x images, equal whenever an image has
  256 anchors to sample, as every VOC image does), the box head by the sampled RoIs (as detectron2).
- ROIAlignV2 (`POOLER_TYPE: ROIAlignV2`): torchvision.ops.roi_align with aligned=True (the half-pixel shift);
  torchvision's MultiScaleRoIAlign always pools with aligned=False.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import roi_heads as _tv_roi_heads
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

__all__ = ["fastrcnn_loss", "BetaRPN", "BetaRoIHeads", "RoIAlignV2", "TORCHVISION_BETA", "set_box_loss"]

TORCHVISION_BETA = 1 / 9


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets, beta: float = TORCHVISION_BETA):
    """torchvision roi_heads.fastrcnn_loss with the smooth-L1 beta as a parameter: cross-entropy over the sampled
    RoIs, box loss summed over the foreground RoIs' class-specific deltas and divided by the sampled RoIs."""
    labels = torch.cat(labels, dim=0)
    regression_targets = torch.cat(regression_targets, dim=0)
    classification_loss = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    n = class_logits.shape[0]
    box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
    box_loss = F.smooth_l1_loss(box_regression[pos, labels[pos]], regression_targets[pos], beta=beta,
                                reduction="sum") / labels.numel()
    return classification_loss, box_loss


class BetaRPN(RegionProposalNetwork):
    """torchvision's RPN whose box-regression loss uses `smooth_l1_beta` instead of the fixed 1/9."""
    smooth_l1_beta: float = TORCHVISION_BETA

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
        pos, neg = self.fg_bg_sampler(labels)
        pos = torch.where(torch.cat(pos, dim=0))[0]
        neg = torch.where(torch.cat(neg, dim=0))[0]
        sampled = torch.cat([pos, neg], dim=0)
        labels = torch.cat(labels, dim=0)
        regression_targets = torch.cat(regression_targets, dim=0)
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[pos], regression_targets[pos], beta=self.smooth_l1_beta,
                                    reduction="sum") / sampled.numel()
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], labels[sampled])
        return objectness_loss, box_loss


@contextlib.contextmanager
def _fastrcnn_beta(beta: float):
    # RoIHeads.forward calls the module-level fastrcnn_loss by name; swapping it for the call is the only hook
    # short of copying its 100-line forward.
    original = _tv_roi_heads.fastrcnn_loss
    _tv_roi_heads.fastrcnn_loss = lambda *a: fastrcnn_loss(*a, beta=beta)
    try:
        yield
    finally:
        _tv_roi_heads.fastrcnn_loss = original


class BetaRoIHeads(RoIHeads):
    """torchvision's RoIHeads whose box loss uses `smooth_l1_beta` (see fastrcnn_loss)."""
    smooth_l1_beta: float = TORCHVISION_BETA

    def forward(self, features, proposals, image_shapes, targets=None):
        with _fastrcnn_beta(self.smooth_l1_beta):
            return super().forward(features, proposals, image_shapes, targets)


def set_box_loss(model: nn.Module, rpn_beta: float, box_beta: float) -> None:
    """Make a built torchvision FasterRCNN use these smooth-L1 betas (0 = L1) in its RPN and box head."""
    model.rpn.__class__, model.rpn.smooth_l1_beta = BetaRPN, float(rpn_beta)
    model.roi_heads.__class__, model.roi_heads.smooth_l1_beta = BetaRoIHeads, float(box_beta)


class RoIAlignV2(MultiScaleRoIAlign):
    """Single-level RoIAlign with aligned=True (detectron2 ROIAlignV2); a MultiScaleRoIAlign so FasterRCNN takes
    it. The scale is inferred as torchvision does (the power of two nearest feature size / image size)."""

    def __init__(self, featmap: str, output_size: int, sampling_ratio: int = 0):
        super().__init__([featmap], output_size, sampling_ratio)

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]):
        from torchvision.ops import roi_align
        feat = x[self.featmap_names[0]]
        h = max(s[0] for s in image_shapes)
        scale = 2.0 ** round(torch.tensor(feat.shape[-2] / h).log2().item())
        return roi_align(feat, boxes, self.output_size, spatial_scale=scale, sampling_ratio=self.sampling_ratio,
                         aligned=True)
