"""Linear probe: grid vs separate heads, LARS and schedules vs the papers' code, MAE head, resume after interruption."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.errors import NonFiniteError
from bench.protocols._linear_grid import head_scores, train_heads
from bench.train import LARS, lr_at


def _problem(n, dim=12, classes=5, seed=0):
    centers = np.random.default_rng(7).normal(size=(classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    return (centers[y] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32), y


def _one_head_with_torch_sgd(x, y, lr, W0, b0, *, epochs, batch_size, seed):
    """Independent reference: nn.Linear + torch.optim.SGD(momentum 0.9) + per-iteration cosine LambdaLR."""
    fc = nn.Linear(x.shape[1], W0.shape[1])
    with torch.no_grad():
        fc.weight.copy_(W0.T), fc.bias.copy_(b0)
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=0.9)
    steps = math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (epochs * steps))))
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            opt.zero_grad()
            F.cross_entropy(fc(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return fc


def test_grid_picks_the_same_lr_as_separate_runs():
    x, y = _problem(400)
    xh, yh = _problem(200, seed=1)
    lrs = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    W0 = torch.randn(len(lrs), 12, 5, generator=torch.Generator().manual_seed(3)) * 0.01
    b0 = torch.zeros(len(lrs), 5)
    W, b = train_heads(x, y, lrs, [0.0] * len(lrs), num_classes=5, epochs=3, batch_size=64, seed=5,
                       init=(W0, b0), progress=False)
    grid_acc = (head_scores(W, b, xh).argmax(-1) == torch.tensor(yh)).float().mean(1).numpy()
    sep_acc = []
    for h, lr in enumerate(lrs):
        fc = _one_head_with_torch_sgd(x, y, lr, W0[h], b0[h], epochs=3, batch_size=64, seed=5)
        sep_acc.append((fc(torch.tensor(xh)).argmax(1).numpy() == yh).mean())
        np.testing.assert_allclose(W[h].numpy(), fc.weight.detach().numpy().T, rtol=1e-3, atol=1e-4)
    assert int(np.argmax(grid_acc)) == int(np.argmax(sep_acc))
    np.testing.assert_allclose(grid_acc, sep_acc, atol=0.011)
    assert max(sep_acc) - min(sep_acc) > 0.1      # the lr matters, so picking it means something


def test_grid_raises_on_non_finite_loss():
    x, y = _problem(64)
    with pytest.raises(NonFiniteError):
        train_heads(x * 1e30, y, [1e30], [0.0], num_classes=5, epochs=2, batch_size=32, progress=False)


def _mae_lars_step(params, grads, mus, lr, wd, momentum=0.9, trust=0.001):
    """Transcribed from facebookresearch/mae util/lars.py (one step, plain tensors)."""
    for p, dp, mu in zip(params, grads, mus):
        if p.ndim > 1:
            dp = dp.add(p, alpha=wd)
            param_norm, update_norm = torch.norm(p), torch.norm(dp)
            one = torch.ones_like(param_norm)
            q = torch.where(param_norm > 0., torch.where(update_norm > 0, (trust * param_norm / update_norm), one),
                            one)
            dp = dp.mul(q)
        mu.mul_(momentum).add_(dp)
        p.add_(mu, alpha=-lr)


def test_lars_matches_mae_and_leaves_1d_params_unscaled():
    torch.manual_seed(0)
    W, b = torch.randn(6, 4), torch.randn(4)
    ours = [W.clone().requires_grad_(), b.clone().requires_grad_()]
    ref, mus = [W.clone(), b.clone()], [torch.zeros(6, 4), torch.zeros(4)]
    opt = LARS(ours, lr=6.4, weight_decay=0.05)
    for step in range(3):
        grads = [torch.randn(6, 4), torch.randn(4)]
        for p, g in zip(ours, grads):
            p.grad = g.clone()
        opt.step()
        _mae_lars_step(ref, grads, mus, 6.4, 0.05)
        if step == 0:   # 1-D: plain momentum SGD without wd; the first step moves b by exactly lr·grad
            np.testing.assert_allclose(ours[1].detach().numpy(), (b - 6.4 * grads[1]).numpy(), rtol=1e-6)
    for p, r in zip(ours, ref):
        np.testing.assert_allclose(p.detach().numpy(), r.numpy(), rtol=1e-6, atol=1e-7)


def test_schedules_match_mae_and_moco():
    def mae_adjust(epoch, lr, min_lr, epochs, warmup):   # mae util/lr_sched.py
        if epoch < warmup:
            return lr * epoch / warmup
        return min_lr + (lr - min_lr) * 0.5 * (1. + math.cos(math.pi * (epoch - warmup) / (epochs - warmup)))

    def moco_adjust(epoch, lr, schedule):                # moco main_lincls.py adjust_learning_rate
        for milestone in schedule:
            lr *= 0.1 if epoch >= milestone else 1.
        return lr
    for t in [0.0, 0.5, 3.3, 10.0, 47.25, 89.99]:
        assert lr_at("warmup_cosine", t, base_lr=6.4, epochs=90, warmup_epochs=10) == pytest.approx(
            mae_adjust(t, 6.4, 0.0, 90, 10))
    for e in [0, 59, 60, 79, 80, 99]:
        assert lr_at("step", e, base_lr=30.0, epochs=100, milestones=(60, 80)) == pytest.approx(
            moco_adjust(e, 30.0, [60, 80]))
    assert lr_at("cosine", 45, base_lr=12.0, epochs=90) == pytest.approx(6.0)


def test_mae_head_is_batchnorm_without_affine_then_linear():
    from bench.protocols._linear_train import make_head
    from bench.presets import resolve_preset
    from bench.protocols.linear import LinearPreset
    preset, _ = resolve_preset("linear", LinearPreset, "mae")
    head = make_head(256, 100, preset)
    bn, fc = head[0], head[1]
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    # timm/torch trunc_normal_(std=0.01) truncates at ±2 absolute, so in effect N(0, 0.01)
    assert fc.bias.abs().max() == 0 and float(fc.weight.detach().std()) == pytest.approx(0.01, rel=0.05)
    assert preset.optimizer == "lars" and preset.batch_size * preset.base_lr / 256 == pytest.approx(6.4)


class _Stop(Exception):
    pass


def _tiny_ctx(mini_root, cache):
    from bench.backbones import Backbone, LoadReport, Preprocessing
    from bench.data import DataRoot
    from bench.runner import RunContext
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten()).eval()
    bb = Backbone(model, LoadReport(source="random", arch="tiny", library="test", family="random",
                                    feature_mode="pool"), Preprocessing(), weights_id="test:tiny-conv")
    return RunContext(dataset="imagenet", data_root=DataRoot(mini_root, mini=True, origin="test"), backbone=bb,
                      resolution=32, cache_dir=cache, quick=True, batch_size=64)


def test_resume_after_interruption_continues_and_matches(mini_root, tmp_path, monkeypatch):
    from bench.protocols import _linear_train
    from bench.runner import run_protocol
    overrides = {"quick_epochs": 3, "quick_batch_size": 64, "quick_train_images": 192}
    ref, _, _ = run_protocol("linear", _tiny_ctx(mini_root, tmp_path / "c1"), preset="mocov2",
                             overrides=overrides, out_dir=tmp_path / "o1")
    ctx = _tiny_ctx(mini_root, tmp_path / "c2")
    bn_before = ctx.backbone.model[1].running_mean.clone()

    def stop_after_first(epoch):
        if epoch == 1:
            raise _Stop
    monkeypatch.setattr(_linear_train, "AFTER_EPOCH_HOOKS", [stop_after_first])
    with pytest.raises(_Stop):
        run_protocol("linear", ctx, preset="mocov2", overrides=overrides, out_dir=tmp_path / "o2")
    monkeypatch.setattr(_linear_train, "AFTER_EPOCH_HOOKS", [])
    rec, _, _ = run_protocol("linear", _tiny_ctx(mini_root, tmp_path / "c2"), preset="mocov2",
                             overrides=overrides, out_dir=tmp_path / "o2")
    assert rec["details"]["resumed_from_epoch"] == 2 and ref["details"]["resumed_from_epoch"] == 0
    assert [h["top1"] for h in rec["details"]["history"]] == [h["top1"] for h in ref["details"]["history"]]
    assert [h["train_loss"] for h in rec["details"]["history"]] == pytest.approx(
        [h["train_loss"] for h in ref["details"]["history"]], rel=1e-5)
    assert rec["metrics"] == pytest.approx(ref["metrics"])
    best = max(ref["details"]["history"], key=lambda h: h["top1"])
    assert ref["metrics"]["top1_max"] == best["top1"] >= ref["metrics"]["top1"]
    assert torch.equal(ctx.backbone.model[1].running_mean, bn_before)   # backbone BN stayed in eval mode
