"""VOC2012 semantic segmentation with an FCN-32s-style head (Long et al. 2015; shelhamer/fcn.berkeleyvision.org).

The trunk's last map (stride 32 for AlexNet/VGG pool5 and ResNets) → fc6 as a convolution over the grid the
network's fc6 read (6 × 6 AlexNet, 7 × 7 VGG-16, 1 × 1 otherwise; voc-fcn-alexnet/net.py and voc-fcn32s/net.py
convolutionalise fc6 that way) → ReLU, dropout → fc7 1 × 1 → ReLU, dropout → 1 × 1 score over 21 classes →
fixed bilinear upsampling to the input (FCN-32s' `upscore` deconvolution has lr_mult 0 and bilinear weights).
fc6-fc8 are re-initialised (the transfer papers' rule, `_voc_transfer_nets.py`). Whole images, batch 1, the
gradient accumulated over `batch_size` images per iteration (voc-fcn-alexnet/solver.prototxt: normalised softmax
loss, lr 1e-4, momentum 0.9, iter_size 20, weight decay 5e-4, fixed lr); random horizontal flips. Labels: the
SegmentationClass palette indices, 255 (void borders) ignored. Test: every val image once at full size, one
confusion matrix, mIoU over the 21 classes (bench.metrics.segmentation).
Deviations: FCN's conv1 `pad: 100` and output crop are not reproduced (the upsampling goes straight to the input
size); FCN trained on SBD's 8,498 images, the transfer benchmark on VOC2012 train.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import DataError
from ..precision import Precision
from ..train import check_finite
from ._voc_transfer_nets import (ConvTrunk, clip_and_step, freeze_trunk, head_grid, init_fc, loss_summary, sgd,
                                 shuffled_forever, step_lr)

__all__ = ["VOCSegmentationClass", "FCN32", "run_segmentation"]


class VOCSegmentationClass(Dataset):
    """(PIL image, (H, W) uint8 class map) for `VOC2012/ImageSets/Segmentation/<split>.txt`."""

    def __init__(self, voc_root: Path, split: str, short_side: int | None = None):
        lst = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"{lst}: VOC segmentation list not found; extract VOCtrainval_11-May-2012.tar under the "
                            f"data root's VOCdevkit/")
        self.ids = [s.strip() for s in lst.read_text().split("\n") if s.strip()]
        self.root, self.short_side = voc_root, short_side

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from PIL import Image
        from ..data.datasets import load_rgb
        img = load_rgb(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")
        path = self.root / "SegmentationClass" / f"{self.ids[i]}.png"
        try:
            with Image.open(path) as m:
                if m.mode != "P":
                    raise DataError(f"{path}: a {m.mode} image, not the devkit's palette PNG of class indices; "
                                    f"re-extract the devkit")
                label = np.array(m)
        except OSError as e:
            raise DataError(f"{path}: unreadable segmentation PNG ({e}); re-extract the devkit") from None
        if label.shape != (img.height, img.width):
            raise DataError(f"{path}: {label.shape[1]}×{label.shape[0]} labels for a {img.width}×{img.height} "
                            f"image; re-extract the devkit")
        if self.short_side:          # --resolution: short side → that many px (labels by nearest neighbour)
            f = self.short_side / min(img.size)
            size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
            img = img.resize(size, Image.BILINEAR)
            label = np.array(Image.fromarray(label).resize(size, Image.NEAREST))
        return img, label


class FCN32(nn.Module):
    def __init__(self, trunk: ConvTrunk, grid: int, hidden: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.trunk = trunk
        self.fc6 = nn.Conv2d(trunk.out_channels, hidden, grid, padding="same")
        self.fc7, self.score = nn.Conv2d(hidden, hidden, 1), nn.Conv2d(hidden, num_classes, 1)
        self.drop = nn.Dropout2d(dropout)
        init_fc([self.fc6, self.fc7, self.score])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.fc6(self.trunk(x))))
        h = self.drop(torch.relu(self.fc7(h)))
        return F.interpolate(self.score(h), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _tensor(img, mean, std) -> torch.Tensor:
    from torchvision.transforms.functional import normalize, to_tensor
    return normalize(to_tensor(img), mean, std)


def _train(model: FCN32, data: VOCSegmentationClass, p, geo, *, mean, std, device, seed: int,
           prec: Precision) -> dict[str, Any]:
    opt, scaler = sgd(model, p), prec.grad_scaler()
    rng = np.random.default_rng(seed)
    model.train()
    model.trunk.eval()
    losses, stream = [], shuffled_forever(len(data), rng)
    for it in range(geo.iterations):
        step_lr(opt, it, geo.lr_step, p.lr_gamma)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(geo.batch_size):        # iter_size: one image at a time, gradients summed
            i = next(stream)
            img, label = data[i]
            x, y = _tensor(img, mean, std), torch.as_tensor(label, dtype=torch.int64)
            if rng.random() < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            with prec.autocast():
                out = model(x[None].to(device)).float()
            loss = F.cross_entropy(out, y[None].to(device), ignore_index=255) / geo.batch_size
            check_finite(loss, f"voc_transfer segmentation iteration {it}", fix="lower the lr")
            scaler.scale(loss).backward()
            total += loss.item()
        clip_and_step(opt, model, p.clip_grad, scaler)
        losses.append(total)
    return {"iterations": geo.iterations, "images_per_iteration": geo.batch_size, **loss_summary(losses)}


@torch.no_grad()
def _confusion(model: FCN32, data: VOCSegmentationClass, num_classes: int, *, mean, std, device,
               prec: Precision, per_image: list | None = None) -> torch.Tensor:
    from ..metrics.segmentation import confusion_matrix
    model.eval()
    conf = torch.zeros(num_classes + 1, num_classes, dtype=torch.int64)
    for i in range(len(data)):
        img, label = data[i]
        with prec.autocast():
            pred = model(_tensor(img, mean, std)[None].to(device)).float().argmax(1)[0].cpu()
        one = confusion_matrix(pred, torch.as_tensor(label), num_classes)
        conf += one
        if per_image is not None:   # (intersection, union) per class: the record's bootstrap interval of mIoU
            inter = one[:num_classes].diagonal()
            per_image.append((inter.numpy(), (one[:num_classes].sum(1) + one.sum(0) - inter).numpy()))
    return conf


def run_segmentation(ctx, p, geo) -> tuple[dict[str, float], dict[str, Any]]:
    from ..metrics.segmentation import segmentation_scores
    backbone = ctx.require_backbone("voc_transfer segmentation")
    voc = ctx.data_root.path / "VOCdevkit" / "VOC2012"
    # whole images at their own size (FCN), or with --resolution their short side at that size
    train, val = (VOCSegmentationClass(voc, s, ctx.resolution) for s in (p.seg_train_split, p.seg_eval_split))
    for split, ds in ((p.seg_train_split, train), (p.seg_eval_split, val)):
        ctx.inputs[f"voc2012/{split}"] = {"source": "images", "count": len(ds)}
    torch.manual_seed(ctx.seed)
    trunk = ConvTrunk(backbone.model)
    grid = head_grid(backbone.model)
    model = FCN32(trunk, grid, geo.hidden, p.num_seg_classes, p.dropout).to(ctx.device)
    frozen = freeze_trunk(trunk, p.finetune, p.train_batchnorm)
    pre = backbone.preprocessing
    prec = ctx.precision("train")   # Caffe trained in float32; --amp autocasts on any device
    info = _train(model, train, p, geo, mean=pre.mean, std=pre.std, device=ctx.device, seed=ctx.seed, prec=prec)
    per_image: list = []
    scores = segmentation_scores(_confusion(model, val, p.num_seg_classes, mean=pre.mean, std=pre.std, prec=prec,
                                            device=ctx.device, per_image=per_image))
    iou = scores["per_class_iou"]
    details = {"train": info, "short_side": ctx.resolution or "native", "fc6_kernel": grid, "trunk": trunk.kind, "trunk_stride": trunk.stride, **frozen,
               "mAcc": scores["mAcc"], "aAcc": scores["aAcc"], "classes_evaluated": int(np.isfinite(iou).sum()),
               "per_class_iou": [None if not np.isfinite(v) else round(float(v), 4) for v in iou]}
    from ..metrics.bootstrap import miou_samples
    details["_samples"] = {"mIoU": miou_samples(*(np.stack(a) for a in zip(*per_image)))} if per_image else {}
    return {"mIoU": scores["mIoU"]}, details
