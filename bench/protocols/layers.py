"""Linear probes on frozen intermediate layers (Zhang et al. 2017; Goyal et al. 2019's standard benchmark).

Each probed layer's activation map is average-pooled to about 9k dimensions and a linear classifier is trained
on it; all layers' heads are trained together, in one pass over one batch order (the many-heads idea of
`_linear_grid.py`), on per-layer features cached like any other (`bench.cache`: one cache entry per layer, keyed
by the layer and its pooling). Metrics per layer (`top1_conv3`, `top5_conv3`); `top1_best` is the best layer's.

Layers. AlexNet (torchvision's `tv:alexnet`, DeepCluster's Caffe-style `deepcluster_alexnet`): conv1..conv5 are
the outputs of the five conv ReLUs of `features`, before any max-pool. ResNet (timm / torchvision): conv1 is the
stem's ReLU (before its max-pool), res2..res5 the outputs of layer1..layer4; InstDisc names them conv1..conv5.

Pooling: AvgPool2d(kernel, stride, padding) per layer as VISSL's Goyal et al. configs give it
(facebookresearch/vissl:configs/config/benchmark/linear_image_classification/imagenet1k/
eval_alexnet_8gpu_transfer_in1k_linear.yaml LINEAR_FEAT_POOL_OPS, eval_resnet_8gpu_transfer_in1k_linear.yaml
LINEAR_EVAL_FEAT_POOL_OPS_MAP), written for 224-px inputs; each spec also names the grid it yields there. When a
map is not the size the kernel was written for (the 64-px miniatures), the layer is adaptively pooled to that
same grid instead, and the record lists the layers that were (never comparable: miniatures are not).

Head: VISSL's eval_mlp is BatchNorm → Linear. At evaluation a BatchNorm with running statistics followed by a
linear layer is a linear layer on features standardised by the training set's mean and variance, which is what
bench trains (the BN's affine part folds into the linear weights); during training VISSL's BN normalises by
batch statistics instead, a difference that vanishes with the batch size.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BenchError
from ..train import check_finite
from . import ProtocolResult, register_protocol

__all__ = ["LayersPreset", "layer_modules", "pool_layer", "train_layer_heads", "layer_features"]


@dataclass(frozen=True)
class LayersPreset:
    layers: tuple[str, ...] = ("conv1", "conv2", "conv3", "conv4", "conv5")
    # per backbone kind, layer → [kernel, stride, padding, grid at 224 px]
    pool: dict = field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "val"
    transform: dict = field(default_factory=lambda: {"resize": 256, "crop": 224, "interpolation": "bilinear"})
    standardize: bool = True               # eval_mlp's BatchNorm (see the module docstring)
    optimizer: str = "sgd"                 # sgd | nesterov
    momentum: float = 0.9
    base_lr: float = 0.01                  # × batch_size/256
    batch_size: int = 256
    weight_decay: float = 5e-4             # on weights and biases (VISSL regularize_bias: True)
    epochs: int = 28
    milestones: tuple[int, ...] = (8, 16, 24)   # lr × 0.1 at each
    head_init_std: float = 0.01
    quick_epochs: int = 2
    paper: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self):
        if self.optimizer not in ("sgd", "nesterov"):
            raise ValueError(f"optimizer must be sgd or nesterov, got {self.optimizer!r}")
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        if self.epochs < 1 or self.batch_size < 1 or self.quick_epochs < 1:
            raise ValueError("epochs, quick_epochs and batch_size must be ≥ 1")
        for kind, specs in self.pool.items():
            for name, spec in specs.items():
                if len(spec) != 4 or min(spec[0], spec[1], spec[3]) < 1 or spec[2] < 0:
                    raise ValueError(f"pool.{kind}.{name}: expected [kernel, stride, padding, grid], got {spec}")


_RESNET_STAGES = {"res2": "layer1", "res3": "layer2", "res4": "layer3", "res5": "layer4",
                  "conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}


def layer_modules(model: nn.Module, names: tuple[str, ...]) -> tuple[str, dict[str, nn.Module]]:
    """(backbone kind, {layer name: module whose output is that layer}) for an AlexNet or a ResNet."""
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        stem = getattr(model, "act1", None) or getattr(model, "relu", None)
        table = {"conv1": stem, **{k: getattr(model, v) for k, v in _RESNET_STAGES.items()}}
        kind = "resnet"
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        relus = [m for m in model.features if isinstance(m, nn.ReLU)]
        if len(relus) != 5:
            raise BenchError(f"{type(model).__name__}: the layers protocol probes AlexNet's 5 conv layers; this "
                             f"network has {len(relus)} conv ReLUs (VGG is not supported)")
        table, kind = {f"conv{i + 1}": m for i, m in enumerate(relus)}, "alexnet"
    else:
        raise BenchError(f"{type(model).__name__}: the layers protocol probes AlexNet (conv1..conv5) and ResNet "
                         f"(conv1, res2..res5) backbones; use the linear protocol for the final feature")
    unknown = [n for n in names if table.get(n) is None]
    if unknown:
        have = sorted(k for k in table if table[k])
        raise BenchError(f"layers {unknown} do not exist in a {kind}; choose from {have}")
    return kind, {n: table[n] for n in names}


def pool_layer(x: torch.Tensor, spec) -> tuple[torch.Tensor, bool]:
    """(N, C·g·g) pooled map and whether the fixed AvgPool2d applied (False: adaptive pooling to the grid g,
    for a map of another size than the kernel was written for)."""
    k, s, p, g = (int(v) for v in spec)
    h, w = x.shape[-2:]
    fixed = all(d + 2 * p >= k and (d + 2 * p - k) // s + 1 == g for d in (h, w))
    out = F.avg_pool2d(x, k, s, p) if fixed else F.adaptive_avg_pool2d(x, g)   # count_include_pad as nn.AvgPool2d
    return out.flatten(1), fixed


class _LayerTap:
    """A backbone stand-in for bench.cache's extraction loop: `features()` runs one forward pass and returns every
    probed layer's pooled map, concatenated in layer order (split again by `dims`)."""

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module], pools: dict[str, list]):
        self.model, self.modules, self.pools = model, modules, pools
        self.dims: dict[str, int] = {}
        self.adaptive: set[str] = set()

    def features(self, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        out: dict[str, torch.Tensor] = {}

        def hook(name):
            def fn(_module, _inputs, output):
                # pooled at once: later in-place ops (ReLU(inplace)) cannot touch the copy
                out[name], fixed = pool_layer(output, self.pools[name])
                if not fixed:
                    self.adaptive.add(name)
            return fn
        handles = [m.register_forward_hook(hook(n)) for n, m in self.modules.items()]
        try:
            self.model(x)
        finally:
            for h in handles:
                h.remove()
        self.dims = {n: out[n].shape[1] for n in self.modules}
        return torch.cat([out[n] for n in self.modules], dim=1)


def layer_features(ctx, split: str, preset: LayersPreset) -> dict[str, Any]:
    """{layer: FeatureSet} of one split: from `--features DIR/<layer>/<split>.npz`, the cache, or one extraction
    pass that fills every layer's cache entry."""
    from ..cache import FeatureSet, _cache_key, _read_cache_entry, _run_extraction, load_feature_split, \
        write_cache_entry
    from ..data import build_eval_transform
    key = f"{ctx.dataset}/{split}"
    if ctx.features_dir is not None:
        from .._io import sha256_file
        files = {n: Path(ctx.features_dir) / n / f"{split}.npz" for n in preset.layers}
        out = {n: load_feature_split(f.parent, split) for n, f in files.items()}
        ctx.inputs[key] = {"source": "features", "path": str(ctx.features_dir), "count": len(out[preset.layers[0]]),
                           "dims": {n: int(fs.features.shape[1]) for n, fs in out.items()},
                           "sha256": {n: sha256_file(f) for n, f in files.items()}}
        return out
    backbone = ctx.require_backbone("per-layer features")
    kind, modules = layer_modules(backbone.model, preset.layers)
    if kind not in preset.pool:
        raise BenchError(f"preset gives no pooling for {kind} layers; add pool.{kind} (--set or protocols/layers.yaml)")
    pools = {n: list(preset.pool[kind][n]) for n in preset.layers}
    spec = ctx.transform_spec(preset.transform)
    prec = ctx.precision("extraction")
    images = ctx.open_images(split, build_eval_transform(spec))
    fields = {n: {"feature_mode": f"layer:{n}:avgpool{pools[n]}", "transform": spec.to_dict(),
                  "dataset": ctx.dataset, "root": str(ctx.data_root.path), "split": split, "n": len(images),
                  "amp": prec.cache_key} for n in preset.layers}
    entries = {n: Path(ctx.cache_dir) / "features" / _cache_key(backbone, f) if ctx.cache_dir else None
               for n, f in fields.items()}
    expected = {n: {"weights_id": backbone.weights_id, **f} for n, f in fields.items()}
    cached = {n: _read_cache_entry(e, split, len(images), expected[n]) if e else None for n, e in entries.items()}
    hit = all(fs is not None for fs in cached.values())
    if hit:
        out = cached
    else:
        tap = _LayerTap(backbone.model, modules, pools)
        _, feats, labels = _run_extraction(tap, images, "layers", batch_size=ctx.batch_size, workers=ctx.workers,
                                           device=ctx.device, desc=f"extract {ctx.dataset}/{split} layers",
                                           amp=prec)
        bounds = np.cumsum([0] + [tap.dims[n] for n in preset.layers])
        out = {n: FeatureSet(np.ascontiguousarray(feats[:, a:b]), labels)
               for n, a, b in zip(preset.layers, bounds[:-1], bounds[1:])}
        for n, fs in out.items():
            fs.meta["adaptive"] = n in tap.adaptive
            if entries[n] is not None:
                write_cache_entry(entries[n], split, fs, expected[n], adaptive=n in tap.adaptive)
    if hit:   # whether a layer was adaptively pooled is a property of the map size, kept with its cache entry
        import json
        for n, e in entries.items():
            out[n].meta["adaptive"] = json.loads((e / f"{split}.meta.json").read_text()).get("adaptive", False)
    ctx.inputs[key] = {"source": "extracted", "count": len(images), "kind": kind, "transform": spec.to_dict(),
                       "dims": {n: int(fs.features.shape[1]) for n, fs in out.items()}, "pool": pools,
                       "adaptive_pool": sorted(n for n, fs in out.items() if fs.meta.get("adaptive")),
                       "cache_hit": hit, "amp": prec.cache_key}
    return out


def train_layer_heads(xs: list, y, *, num_classes: int, epochs: int, batch_size: int, lr: float, momentum: float,
                      nesterov: bool, weight_decay: float, milestones=(), init_std: float = 0.01, seed: int = 0,
                      device="cpu", init: list | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One linear head per feature matrix in `xs`, trained together: every step reads the same rows of every
    layer, the loss is the sum of the heads' mean cross-entropies (so each head gets exactly its own gradient),
    one torch.optim.SGD steps them all; lr × 0.1 at each milestone epoch. Heads start from N(0, init_std²)
    weights and zero biases (VISSL's eval_mlp) unless `init` gives [(W, b)]. Returns [(W (D, C), b (C))]."""
    from tqdm.auto import tqdm
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)     # batch order only: the same whatever the number of heads
    init_gen = torch.Generator().manual_seed(seed)
    xs = [torch.as_tensor(x, dtype=torch.float32).to(device) for x in xs]
    y = torch.as_tensor(y, dtype=torch.long).to(device)
    if init is None:
        init = [(torch.randn(x.shape[1], num_classes, generator=init_gen) * init_std, torch.zeros(num_classes))
                for x in xs]
    heads = [(W.clone().to(device).requires_grad_(True), b.clone().to(device).requires_grad_(True))
             for W, b in init]
    opt = torch.optim.SGD([p for h in heads for p in h], lr=lr, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)
    n = len(y)
    steps = math.ceil(n / batch_size)
    bar = tqdm(total=epochs * steps, desc=f"{len(xs)} layer heads", unit="step", leave=False,
               disable=os.environ.get("BENCH_PROGRESS", "1") == "0")
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * 0.1 ** sum(epoch >= m for m in milestones)
        perm = torch.randperm(n, generator=gen).to(device)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            loss = sum(F.cross_entropy(x[idx] @ W + b, y[idx]) for x, (W, b) in zip(xs, heads))
            check_finite(loss, f"layer heads epoch {epoch} step {s}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update()
    bar.close()
    return [(W.detach(), b.detach()) for W, b in heads]


def _standardizer(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 1/sqrt(var + eps) per dimension, as an eval-mode BatchNorm with the training set's statistics."""
    x64 = x.astype(np.float64)
    return x64.mean(0).astype(np.float32), (1.0 / np.sqrt(x64.var(0) + eps)).astype(np.float32)


@register_protocol("layers", preset_cls=LayersPreset)
def run_layers(ctx, preset: LayersPreset) -> ProtocolResult:
    """Linear probes on frozen conv1..conv5 / res2..res5, all layers' heads in one pass (Zhang 2017, Goyal 2019)."""
    from ..train import scaled_lr
    from ..metrics.bootstrap import mean_samples
    from ._common import topk_hits, topk_percent
    train = layer_features(ctx, preset.train_split, preset)
    val = layer_features(ctx, preset.eval_split, preset)
    first = preset.layers[0]
    for split, sets in ((preset.train_split, train), (preset.eval_split, val)):
        bad = [n for n in preset.layers if not np.array_equal(sets[n].labels, sets[first].labels)]
        if bad:
            raise BenchError(f"{split}: layers {bad} have other labels (or rows) than {first}; every layer's "
                             f"features must be of the same images in the same order")
    if train[first].labels.ndim != 1:
        raise BenchError("the layers protocol is single-label classification; this dataset is multi-label")
    k = ctx.num_classes(train[first].labels, val[first].labels)
    xs_train, xs_val = [], []
    for n in preset.layers:
        a, b = train[n].features, val[n].features
        if preset.standardize:
            mu, inv = _standardizer(a)
            a, b = (a - mu) * inv, (b - mu) * inv
        xs_train.append(a)
        xs_val.append(b)
    epochs = min(preset.quick_epochs, preset.epochs) if ctx.quick else preset.epochs
    lr = scaled_lr(preset.base_lr, preset.batch_size, "linear")
    heads = train_layer_heads(xs_train, train[first].labels, num_classes=k, epochs=epochs,
                              batch_size=preset.batch_size, lr=lr, momentum=preset.momentum,
                              nesterov=preset.optimizer == "nesterov", weight_decay=preset.weight_decay,
                              milestones=preset.milestones, init_std=preset.head_init_std, seed=ctx.seed,
                              device=ctx.device)
    metrics: dict[str, float] = {}
    samples = {}
    for n, x, (W, b) in zip(preset.layers, xs_val, heads):
        scores = torch.as_tensor(x).to(W.device) @ W + b
        acc = topk_percent(scores, val[n].labels)
        metrics[f"top1_{n}"], metrics[f"top5_{n}"] = acc["top1"], acc["top5"]
        samples[f"top1_{n}"] = mean_samples(topk_hits(scores, val[n].labels, ks=(1,))[1])
    best = max(preset.layers, key=lambda n: metrics[f"top1_{n}"])   # first maximum in layer order
    metrics["top1_best"] = metrics[f"top1_{best}"]
    samples["top1_best"] = samples[f"top1_{best}"]
    details = {"best_layer": best, "epochs": epochs, "lr": lr, "batch_size": preset.batch_size,
               "dims": {n: int(train[n].features.shape[1]) for n in preset.layers},
               "n_train": len(train[first]), "n_eval": len(val[first]), "reported": "final epoch"}
    return ProtocolResult(metrics, details=details, samples=samples,
                          headline=("top1_best",) + tuple(f"top1_{n}" for n in preset.layers))
