"""VOC2007 multi-label classification fine-tuning, as facebookresearch/deepcluster:eval_voc_classif.py.

Data (L258-289): every image of the split's class lists with one label per class, 1 present, 0 absent, 255 for
the devkit's difficult (0) label; the order is shuffled once (L278) and then read in that order every epoch.
Training (L73-78, L197-255): RandomHorizontalFlip + RandomResizedCrop(224, scale=(0.1, 0.5), ratio=(1, 1)),
batch 16, BCE-with-logits summed over the non-difficult labels and divided by the batch, SGD momentum 0.9,
gradient-norm clipping at 10, lr × 0.5 every `lr_step` iterations, the trunk's BatchNorms in eval mode throughout
(`model.features.eval()`). Test (L129-194): `test_crops` passes, each a fresh draw of the training transform
(`eval_random_crops` 1, the default) or Resize(256) + TenCrop(224); the logits of the passes are summed; per class
sklearn's average_precision_score on the non-difficult images with 1e-5·label subtracted from the scores
(L190-193, philkr/voc-classification:src/train_cls.py L151-157 verbatim): `mAP`. `mAP_11pt` is the devkit's
VOC2007 11-point AP on the same scores (bench.metrics.transfer.voc07_mean_ap).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..metrics.transfer import voc07_mean_ap
from ..precision import Precision
from ..train import check_finite
from ._voc_transfer_nets import (ConvTrunk, MLPHead, clip_and_step, freeze_trunk, head_grid, loss_summary, sgd,
                                 step_lr)

__all__ = ["VOCMultiLabel", "ClassifierNet", "krahenbuhl_ap", "classification_metrics", "run_classification"]

VOC_IGNORE = 255


class VOCMultiLabel(Dataset):
    """(image tensor, (20,) int64 labels: 1 / 0 / 255 difficult) over `VOC2007/ImageSets/Main/<split>.txt`."""

    def __init__(self, voc_root: Path, split: str, transform: Any):
        from ..data.transfer_lists import voc_labels
        lst = voc_root / "ImageSets" / "Main" / f"{split}.txt"
        if not lst.is_file():
            raise DataError(f"{lst}: VOC image list not found; extract the VOC2007 devkit (trainval and test tars) "
                            f"under the data root's VOCdevkit/")
        self.ids = [s.strip() for s in lst.read_text().split("\n") if s.strip()]
        self.devkit = voc_labels(voc_root, split, self.ids)               # 1 / -1 / 0 (difficult)
        self.labels = np.where(self.devkit > 0, 1, np.where(self.devkit < 0, 0, VOC_IGNORE)).astype(np.int64)
        self.root, self.transform = voc_root, transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from ..data.datasets import load_rgb
        img = load_rgb(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")
        return self.transform(img), torch.as_tensor(self.labels[i])


class ClassifierNet(nn.Module):
    def __init__(self, trunk: ConvTrunk, grid: int, hidden: int, num_classes: int = 20):
        super().__init__()
        self.trunk, self.pool = trunk, nn.AdaptiveAvgPool2d(grid)
        self.head = MLPHead(trunk.out_channels * grid * grid, hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.trunk(x)))


def krahenbuhl_ap(scores: np.ndarray, devkit_labels: np.ndarray) -> float:
    """One class's AP (fraction) as philkr/voc-classification and DeepCluster compute it: difficult images dropped,
    sklearn's (non-interpolated) average precision of scores − 1e-5·label (ties broken against positives)."""
    from sklearn.metrics import average_precision_score
    keep = devkit_labels != 0
    y = (devkit_labels[keep] > 0).astype(np.int64)
    if not y.any():
        return float("nan")
    return float(average_precision_score(y, scores[keep] - 1e-5 * y))


def classification_metrics(scores: np.ndarray, devkit_labels: np.ndarray) -> tuple[dict[str, float], dict]:
    """({mAP, mAP_11pt} in percent, per-class details) from (N, 20) scores and devkit labels 1 / -1 / 0."""
    aps = [100 * krahenbuhl_ap(scores[:, c], devkit_labels[:, c]) for c in range(scores.shape[1])]
    m11, aps11 = voc07_mean_ap(scores, devkit_labels, "devkit", "devkit")
    valid = [a for a in aps if np.isfinite(a)]
    return ({"mAP": float(np.mean(valid)) if valid else float("nan"), "mAP_11pt": m11},
            {"per_class_ap": [round(a, 4) if np.isfinite(a) else None for a in aps],
             "per_class_ap_11pt": [round(a, 4) if np.isfinite(a) else None for a in aps11],
             "classes_evaluated": len(valid)})


def _transforms(p, pre, crop: int):
    from torchvision import transforms as T
    norm = T.Normalize(pre.mean, pre.std)
    train = T.Compose([T.RandomHorizontalFlip(), T.RandomResizedCrop(crop, scale=tuple(p.crop_scale), ratio=(1, 1)),
                       T.ToTensor(), norm])
    if p.test_crop_mode == "random":
        return train, train
    resize = round(p.test_resize * crop / p.crop)
    test = T.Compose([T.Resize(resize), T.TenCrop(crop),
                      T.Lambda(lambda crops: torch.stack([norm(T.functional.to_tensor(c)) for c in crops]))])
    return train, test


def _train(model: ClassifierNet, data: VOCMultiLabel, p, geo, *, device, seed: int, prec: Precision
           ) -> dict[str, Any]:
    opt, scaler = sgd(model, p), prec.grad_scaler()
    crit = nn.BCEWithLogitsLoss(reduction="none")
    order = np.random.default_rng(seed).permutation(len(data))   # shuffled once, as VOC2007_dataset does
    loader = DataLoader(torch.utils.data.Subset(data, order.tolist()), batch_size=geo.batch_size, shuffle=False)
    model.train()
    model.trunk.eval()               # "in the batch norms always use global statistics"
    it, losses = 0, []
    while it < geo.iterations:
        for x, y in loader:
            step_lr(opt, it, geo.lr_step, p.lr_gamma)
            with prec.autocast():
                out = model(x.to(device)).float()
            y = y.to(device).float()
            loss = crit(out, y).masked_fill(y == VOC_IGNORE, 0).sum() / y.shape[0]
            check_finite(loss, f"voc_transfer classification iteration {it}", fix="lower the lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            clip_and_step(opt, model, p.clip_grad, scaler)
            losses.append(loss.item())
            it += 1
            if it == geo.iterations:
                break
    return {"iterations": it, **loss_summary(losses)}


@torch.no_grad()
def _scores(model: ClassifierNet, data: VOCMultiLabel, n_passes: int, *, device, batch_size: int,
            prec: Precision) -> np.ndarray:
    """Summed logits over the test passes: `n_passes` random-crop passes, or one pass of 10 fixed crops."""
    model.eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    total = None
    for _ in range(n_passes):
        chunks = []
        for x, _y in loader:
            if x.ndim == 5:                        # TenCrop: (B, 10, C, H, W) → sum over the crops
                b, n = x.shape[:2]
                with prec.autocast():
                    out = model(x.flatten(0, 1).to(device)).float()
                chunks.append(out.view(b, n, -1).sum(1).cpu())
            else:
                with prec.autocast():
                    chunks.append(model(x.to(device)).float().cpu())
        s = torch.cat(chunks).double().numpy()
        total = s if total is None else total + s
    return total


def run_classification(ctx, p, geo) -> tuple[dict[str, float], dict[str, Any]]:
    from ..data.voc import VOC_CLASSES
    backbone = ctx.require_backbone("voc_transfer classification")
    train_tf, test_tf = _transforms(p, backbone.preprocessing, geo.crop)
    sets = []
    for split, tf in ((p.train_split, train_tf), (p.eval_split, test_tf)):
        year, _, image_set = split.partition("-")     # "2007-trainval": VOC2007's trainval list
        sets.append(VOCMultiLabel(ctx.data_root.path / "VOCdevkit" / f"VOC{year}", image_set, tf))
        ctx.inputs[f"voc/{split}"] = {"source": "images", "count": len(sets[-1])}
    train, test = sets
    torch.manual_seed(ctx.seed)
    trunk = ConvTrunk(backbone.model)
    grid = head_grid(backbone.model)
    model = ClassifierNet(trunk, grid, geo.hidden, len(VOC_CLASSES)).to(ctx.device)
    frozen = freeze_trunk(trunk, p.finetune, p.train_batchnorm)
    prec = ctx.precision("train")   # Caffe trained in float32; --amp autocasts on any device
    info = _train(model, train, p, geo, device=ctx.device, seed=ctx.seed, prec=prec)
    torch.manual_seed(ctx.seed + 1)       # the random test crops
    passes = p.test_crops if p.test_crop_mode == "random" else 1
    scores = _scores(model, test, passes, device=ctx.device, batch_size=ctx.batch_size, prec=prec)
    metrics, details = classification_metrics(scores, test.devkit)
    details.update({"train": info, "pool_grid": grid, "head": f"fc6-fc8 ({geo.hidden} wide), re-initialised",
                    "trunk": trunk.kind, **frozen,
                    "test": f"{p.test_crops} {'random' if p.test_crop_mode == 'random' else 'fixed (TenCrop)'} "
                            f"crops, logits summed", "mAP_definition": "sklearn AP, difficult dropped "
                                                                       "(philkr/voc-classification, DeepCluster)",
                    "mAP_11pt_definition": "VOC2007 devkit 11-point, difficult ignored"})
    return metrics, details
