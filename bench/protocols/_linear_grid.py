"""Many linear heads trained together on cached features (DINOv2 `dinov2/eval/linear.py`, on a cache).

DINOv2 trains 52 heads in one pass and sums their cross-entropies; each head is its own SGD param group
(momentum 0.9), lr scaled by batch/256, cosine per iteration to 0. Here the heads share one cached feature (centre
crop, no augmentation) and differ by (lr, weight decay). Their weights are stacked as W (H, D, C), so one GEMM
`x @ W` (D × H·C) reads each batch once for all heads, and the SGD update is one fused tensor op: the whole grid
costs about one head's feature traffic (benchmarks/linear_grid_vs_one_head.py measures it).

Selection differs from DINOv2 on purpose: DINOv2 picks the head on `--val-dataset`, by default ImageNet val, the
split it reports. Here the winner is picked on a seeded hold-out of train, refit on all of train and scored once
on the eval split. Ties go to the first head in (lr, wd) order.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from ..train import check_finite
from . import ProtocolResult
from ._common import holdout_split, topk_percent, topk_samples

__all__ = ["train_heads", "head_scores", "run_grid"]


def _init_heads(h: int, d: int, c: int, gen: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    # DINOv2 LinearClassifier: weight ~ N(0, 0.01), bias 0
    W = (torch.randn(h, d, c, generator=gen) * 0.01).to(device)
    return W, torch.zeros(h, c, device=device)


def train_heads(x, y, lrs, wds, *, num_classes: int, epochs: int, batch_size: int, momentum: float = 0.9,
                seed: int = 0, device="cpu", init: tuple | None = None, progress: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Train H = len(lrs) linear heads (lrs[h], wds[h]) at once with SGD; returns (W (H, D, C), b (H, C)).

    Per head the update is torch.optim.SGD's (momentum, dampening 0, weight decay on W and b added to the
    gradient), with lr_h × cosine(iteration) to 0. The loss is the sum of the heads' mean cross-entropies, so
    each head gets exactly the gradient it would get alone.
    """
    from tqdm.auto import tqdm
    device = torch.device(device)
    x = torch.as_tensor(x, dtype=torch.float32).to(device)
    y = torch.as_tensor(y, dtype=torch.long).to(device)
    n, d = x.shape
    h = len(lrs)
    # separate generators, so the batch order is the same whatever the number of heads
    gen = torch.Generator().manual_seed(seed)
    W, b = init if init is not None else _init_heads(h, d, num_classes, torch.Generator().manual_seed(seed), device)
    W, b = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
    lr = torch.tensor(lrs, dtype=torch.float32, device=device)
    wd = torch.tensor(wds, dtype=torch.float32, device=device)
    bufs = [torch.zeros_like(W), torch.zeros_like(b)]
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    bar = tqdm(total=total, desc=f"{h} linear heads", unit="step", leave=False,
               disable=not progress or os.environ.get("BENCH_PROGRESS", "1") == "0")
    for step in range(total):
        if step % steps_per_epoch == 0:
            perm = torch.randperm(n, generator=gen).to(device)
        idx = perm[(step % steps_per_epoch) * batch_size:][:batch_size]
        logits = (x[idx] @ W.permute(1, 0, 2).reshape(d, h * num_classes)).view(-1, h, num_classes) + b
        loss = F.cross_entropy(logits.permute(0, 2, 1), y[idx].unsqueeze(1).expand(-1, h), reduction="none")
        loss = loss.mean(0).sum()
        check_finite(loss, f"linear grid step {step}")
        gW, gb = torch.autograd.grad(loss, [W, b])
        scale = 0.5 * (1 + math.cos(math.pi * step / total))   # cosine per iteration to 0 (DINOv2)
        with torch.no_grad():
            for p, g, buf, shape in ((W, gW, bufs[0], (h, 1, 1)), (b, gb, bufs[1], (h, 1))):
                buf.mul_(momentum).add_(g + wd.view(shape) * p)
                p.sub_(lr.view(shape) * scale * buf)
        bar.update()
    bar.close()
    return W.detach(), b.detach()


@torch.no_grad()
def head_scores(W: torch.Tensor, b: torch.Tensor, x, *, chunk: int = 8192) -> torch.Tensor:
    """Logits (H, N, C) of every head on x."""
    x = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.einsum("nd,hdc->hnc", x[s:s + chunk].to(W.device), W) + b[:, None]
           for s in range(0, len(x), chunk)]
    return torch.cat(out, dim=1)


def run_grid(ctx, preset) -> ProtocolResult:
    from ..train import scaled_lr
    train = ctx.features(preset.train_split, preset.eval_transform, feature_mode=preset.feature_mode)
    val = ctx.features(preset.eval_split, preset.eval_transform, feature_mode=preset.feature_mode)
    k = ctx.num_classes(train.labels, val.labels)
    epochs = min(preset.grid_epochs, 2) if ctx.quick else preset.grid_epochs
    bs = preset.grid_batch_size
    combos = [(lr, wd) for lr in preset.grid_lrs for wd in preset.grid_weight_decays]
    lrs = [scaled_lr(lr, bs, "linear") for lr, _ in combos]
    wds = [wd for _, wd in combos]
    kw = dict(num_classes=k, epochs=epochs, batch_size=bs, seed=ctx.seed, device=ctx.device)
    tr, ho = holdout_split(len(train), preset.holdout_fraction, preset.holdout_seed)
    W, b = train_heads(train.features[tr], train.labels[tr], lrs, wds, **kw)
    y_ho = torch.as_tensor(train.labels[ho], device=W.device)
    acc = (head_scores(W, b, train.features[ho]).argmax(-1) == y_ho).float().mean(1).mul(100).tolist()
    best = int(np.argmax(acc))   # first maximum: ties go to the earlier (smaller lr) head
    W1, b1 = train_heads(train.features, train.labels, [lrs[best]], [wds[best]], **kw)
    scores = head_scores(W1, b1, val.features)[0]
    metrics = topk_percent(scores, val.labels)
    details = {"selection": f"head chosen by top-1 on a seeded {preset.holdout_fraction:.0%} hold-out of "
                            f"{preset.train_split} (seed {preset.holdout_seed}); refit on all of "
                            f"{preset.train_split}; scored once on {preset.eval_split}",
               "best_base_lr": combos[best][0], "best_lr": lrs[best], "best_weight_decay": wds[best],
               "n_heads": len(combos), "epochs": epochs, "batch_size": bs,
               "holdout_top1": {f"lr={lr:g},wd={wd:g}": a for (lr, wd), a in zip(combos, acc)},
               "grid_on_edge": combos[best][0] in (min(preset.grid_lrs), max(preset.grid_lrs))}
    return ProtocolResult(metrics, details=details, headline=("top1", "top5"),
                          samples=topk_samples(scores, val.labels))
