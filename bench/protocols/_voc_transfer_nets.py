"""The networks of the VOC transfer tasks: a bench backbone's conv trunk plus the fc6-fc8 head each task re-trains.

Every task re-initialises fc6-fc8 as the papers' code does (facebookresearch/deepcluster:eval_voc_classif.py
L85-90 and philkr/voc-classification:src/train_cls.py L107-115, `--random-from` the dropout before fc6:
weights N(0, 0.01), biases 0.1) and either trains everything (`all`) or freezes the trunk (`fc6-8`).

- AlexNet / VGG-16 (torchvision `features`, DeepCluster v1's `features` behind its fixed Sobel layer): the trunk is
  `features`; classification pools it to the grid the network's own fc6 reads (6 × 6 AlexNet, 7 × 7 VGG-16), so
  fc6 sees exactly pool5 on 224-px crops. Detection drops the last max-pool (Fast R-CNN's RoI pooling replaces
  pool5, stride 16).
- Any other bench backbone (conv-only ResNets, ViTs) has no fc6/fc7: the head that plays their role is a new
  two-layer MLP of the same shape (fc6, fc7: `hidden` wide, ReLU + dropout 0.5) on the backbone's last feature map,
  globally average-pooled for classification (the backbone's own pooled feature). ViTs give their last block's
  patch tokens as a map (timm's `forward_intermediates`, any input size).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..backbones.features import is_vit
from ..errors import BenchError

__all__ = ["ConvTrunk", "MLPHead", "head_grid", "init_fc", "freeze_trunk", "TRUNK_KINDS"]

TRUNK_KINDS = ("features", "forward_features", "vit")


class ConvTrunk(nn.Module):
    """The backbone up to its last conv map (N, C, h, w); `stride` and `out_channels` measured on a dry run."""

    def __init__(self, model: nn.Module, drop_last_pool: bool = False):
        super().__init__()
        self.model = model
        if is_vit(model):
            self.kind = "vit"
            model.dynamic_img_size = True          # any input size: timm resamples the position embeddings
            model.patch_embed.strict_img_size, model.patch_embed.dynamic_img_pad = False, True
            from timm.layers import Format
            model.patch_embed.flatten, model.patch_embed.output_fmt = False, Format("NHWC")
        elif isinstance(getattr(model, "features", None), nn.Sequential):
            self.kind = "features"
            layers = list(model.features)
            if drop_last_pool and isinstance(layers[-1], nn.MaxPool2d):
                layers = layers[:-1]
            self.layers = nn.Sequential(*layers)   # shares the modules (and weights) of model.features
        elif hasattr(model, "forward_features"):
            self.kind = "forward_features"
        else:
            raise BenchError(f"voc_transfer needs a backbone with a conv trunk (`features`, `forward_features` or a "
                             f"timm ViT), not {type(model).__name__}")
        with torch.no_grad():
            was = model.training
            out = self.eval()(torch.zeros(1, 3, 224, 224))
            model.train(was)
        if out.ndim != 4:
            raise BenchError(f"{type(model).__name__}.forward_features gives a {out.ndim}-d tensor, not a feature "
                             f"map; voc_transfer needs a conv map (N, C, h, w)")
        self.out_channels, self.stride = int(out.shape[1]), 224 / out.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vit":
            return self.model.forward_intermediates(x, indices=1, norm=False, output_fmt="NCHW",
                                                    intermediates_only=True)[-1]
        if self.kind == "features":
            sobel = getattr(self.model, "sobel", None)
            return self.layers(sobel(x) if sobel is not None else x)
        return self.model.forward_features(x)


def head_grid(model: nn.Module) -> int:
    """The pool5 grid the network's own fc6 reads (torchvision `avgpool`, DeepCluster's 256·6·6 / 512·7·7), else 1."""
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        size = pool.output_size if isinstance(pool.output_size, int) else pool.output_size[0]
        return int(size or 1)
    if type(model).__name__ == "DeepClusterNet":
        return 6 if model.num_features == 256 else 7
    return 1


def init_fc(layers: Iterable[nn.Module]) -> None:
    """DeepCluster / Krähenbühl re-initialisation of fc6-fc8: N(0, 0.01) weights, 0.1 biases."""
    for m in layers:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.constant_(m.bias, 0.1)


class MLPHead(nn.Module):
    """fc6 → ReLU → dropout → fc7 → ReLU → dropout → fc8, on a flattened input (DeepCluster's classifier order
    puts the dropout before each fc; the same thing in eval, and in training up to which activations drop)."""

    def __init__(self, in_features: int, hidden: int, out: int, dropout: float = 0.5):
        super().__init__()
        self.fc6, self.fc7, self.fc8 = nn.Linear(in_features, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out)
        self.drop = nn.Dropout(dropout)
        init_fc([self.fc6, self.fc7, self.fc8])

    def hidden_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.fc6(self.drop(x.flatten(1)))))
        return self.drop(torch.relu(self.fc7(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.hidden_features(x))


def freeze_trunk(trunk: nn.Module, finetune: str, train_batchnorm: bool) -> dict[str, int]:
    """`fc6-8`: the trunk stops training, except BatchNorm's affine parameters with `train_batchnorm` (DeepCluster's
    72.0 mAP: eval_voc_classif.sh, README erratum). Returns trainable/frozen parameter counts of the trunk."""
    if finetune == "fc6-8":
        for p in trunk.parameters():
            p.requires_grad_(False)
        if train_batchnorm:
            for m in trunk.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(True)
    trainable = sum(p.numel() for p in trunk.parameters() if p.requires_grad)
    return {"trunk_trainable_params": trainable,
            "trunk_frozen_params": sum(p.numel() for p in trunk.parameters()) - trainable}


# The three tasks' training loops share their solver: Caffe's SGD on the trainable parameters, a step schedule,
# optional gradient clipping, and the same loss summary in the record.
def sgd(model: nn.Module, p) -> torch.optim.SGD:
    return torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=p.lr, momentum=p.momentum,
                           weight_decay=p.weight_decay)


def step_lr(opt: torch.optim.Optimizer, it: int, every: int, gamma: float) -> None:
    if it and it % every == 0:
        for g in opt.param_groups:
            g["lr"] *= gamma


def clip_and_step(opt: torch.optim.Optimizer, model: nn.Module, clip: float, scaler: torch.amp.GradScaler) -> None:
    """Clip (on the unscaled gradients) and step through `scaler` (a no-op scaler unless the run autocasts to
    float16; a step whose gradients overflowed is skipped and the scale lowered)."""
    if clip > 0:
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(opt)
    scaler.update()


def shuffled_forever(n: int, rng: np.random.Generator) -> Iterator[int]:
    """Indices of n samples, pass after pass, each pass a new permutation drawn from `rng` when the last runs out
    (the data layers' shuffle of the Caffe/py-faster-rcnn recipes). Nothing for n = 0."""
    while n:
        yield from rng.permutation(n).tolist()


def loss_summary(losses: list[float]) -> dict:
    return {"final_loss": losses[-1] if losses else None,
            "mean_loss_last_10pct": float(np.mean(losses[-max(len(losses) // 10, 1):])) if losses else None}
