"""End-to-end fine-tuning: layer-decay groups, mixup/cutmix targets, the lr rules and schedules against the papers'
code transcribed here, the strict head-only load, resume = uninterrupted, and CLI runs on the miniature."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.errors import CheckpointError, NonFiniteError
from bench.presets import resolve_preset
from bench.protocols.finetune import FinetunePreset, effective_preset, scaled_finetune_lr

pytestmark = pytest.mark.usefixtures("one_thread")

# a 2-block ViT: every code path of a ViT-B, at a fraction of the cost
TINY_VIT = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def _preset(name: str = "mae", **over) -> FinetunePreset:
    return resolve_preset("finetune", FinetunePreset, name, over)[0]


def _tiny_backbone(arch: str = "vit_tiny_patch16_224", **kwargs):
    from bench.backbones import Backbone, LoadReport
    from bench.backbones._build import create_model
    from bench.backbones.features import default_feature_mode
    torch.manual_seed(0)
    model, library = create_model(arch, **kwargs)
    report = LoadReport(source="random", arch=arch, library=library, family="random",
                        feature_mode=default_feature_mode(model), model_kwargs=dict(kwargs))
    from bench.backbones import Preprocessing
    return Backbone(model.eval(), report, Preprocessing(), weights_id=f"test:{arch}:{sorted(kwargs.items())}")


# ------------------------------------------------------------------------------------------- layer-wise decay
def _mae_param_groups_lrd(model, weight_decay, no_weight_decay_list, layer_decay):
    """facebookresearch/mae util/lr_decay.py param_groups_lrd + get_layer_id_for_vit, transcribed: per parameter
    name → (lr_scale, weight_decay)."""
    num_layers = len(model.blocks) + 1
    layer_scales = [layer_decay ** (num_layers - i) for i in range(num_layers + 1)]
    out = {}
    for n, p in model.named_parameters():
        if n in ("cls_token", "pos_embed") or n.startswith("patch_embed"):
            layer_id = 0
        elif n.startswith("blocks"):
            layer_id = int(n.split(".")[1]) + 1
        else:
            layer_id = num_layers
        decay = 0.0 if (p.ndim == 1 or n in no_weight_decay_list) else weight_decay
        out[n] = (layer_scales[layer_id], decay)
    return out


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_layer_decay_groups_equal_mae_param_groups_lrd(global_pool):
    from bench.protocols._finetune_train import build_finetune_model, param_groups
    preset = _preset("mae", global_pool=global_pool, layer_decay=0.65)
    model, _ = build_finetune_model(_tiny_backbone(depth=4, embed_dim=32, num_heads=2), preset, 10, 32)
    ours = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for g in param_groups(model, preset):
        for p in g["params"]:
            ours[names[id(p)]] = (g["lr_scale"], g["weight_decay"])
    ref = _mae_param_groups_lrd(model, 0.05, model.no_weight_decay(), 0.65)
    assert set(ours) == set(ref)
    for n in ref:
        assert ours[n] == pytest.approx(ref[n]), n
    # the head learns at the full rate, the patch embedding at decay^(depth + 1)
    assert ours["head.weight"] == pytest.approx((1.0, 0.05))
    assert ours["patch_embed.proj.weight"][0] == pytest.approx(0.65 ** 5)


def test_no_layer_decay_is_plain_weight_decay_groups():
    from bench.protocols._finetune_train import build_finetune_model, param_groups
    preset = _preset("deit")
    model, _ = build_finetune_model(_tiny_backbone(**TINY_VIT), preset, 10, 32)
    groups = param_groups(model, preset)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for n, p in model.named_parameters():   # timm / DeiT: no decay on 1-D tensors, pos_embed, cls_token
        assert (id(p) in decayed) == (p.ndim > 1 and n not in {"pos_embed", "cls_token"}), n
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in groups)


# ----------------------------------------------------------------------------------------- mixup and cutmix
def _smooth_one_hot(y: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / classes
    return torch.full((len(y), classes), off).scatter_(1, y.view(-1, 1), 1 - smoothing + off)


def test_mixup_targets_are_the_lambda_blend_of_smoothed_labels():
    from bench.protocols._finetune_train import make_mixup
    mixup = make_mixup(_preset("mae", mixup=0.8, cutmix=0.0), 5)
    np.random.seed(3)
    x = torch.rand(6, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    xm, t = mixup(x.clone(), y)
    # the images are x·λ + flip(x)·(1-λ); recover λ from them by least squares
    a, b = (x - x.flip(0)).flatten(), (xm - x.flip(0)).flatten()
    lam = float(a @ b / (a @ a))
    assert torch.allclose(xm, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    expected = lam * _smooth_one_hot(y, 5, 0.1) + (1 - lam) * _smooth_one_hot(y.flip(0), 5, 0.1)
    assert torch.allclose(t.double(), expected.double(), atol=1e-6)
    assert 0 < lam < 1


def test_cutmix_targets_weight_labels_by_pasted_area():
    from bench.protocols._finetune_train import make_mixup
    mixup = make_mixup(_preset("mae", mixup=0.0, cutmix=1.0), 4)
    for seed in range(5):
        np.random.seed(seed)
        x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 16, 16).clone() + 1
        y = torch.tensor([0, 1, 2, 3])
        xm, t = mixup(x.clone(), y)
        pasted = (xm != x)[0, 0]           # sample 0 receives the box from sample 3 (the flipped batch)
        assert torch.equal((xm != x)[1, 0], pasted)   # one box for the whole batch ('batch' mode)
        lam = 1 - pasted.float().mean().item()        # correct_lam: λ is the area left unpasted
        expected = lam * _smooth_one_hot(y, 4, 0.1) + (1 - lam) * _smooth_one_hot(y.flip(0), 4, 0.1)
        assert torch.allclose(t, expected, atol=1e-6), seed
        assert torch.allclose(t.sum(1), torch.ones(4))


# ---------------------------------------------------------------------------------------- lr rules, schedules
def test_lr_scaling_rules_of_each_paper():
    # MAE: blr × eff_batch / 256 (FINETUNE.md: blr 5e-4 at 1024 → 2e-3)
    assert scaled_finetune_lr(_preset("mae"), 1024) == pytest.approx((5e-4 * 4, 0.0, 1e-6))
    assert scaled_finetune_lr(_preset("mae"), 64)[0] == pytest.approx(5e-4 / 4)
    # DeiT: lr × batch / 512
    assert scaled_finetune_lr(_preset("deit"), 1024)[0] == pytest.approx(1e-3)
    # BEiT / iBOT: the lr as given, whatever the batch
    assert scaled_finetune_lr(_preset("beit"), 64)[0] == scaled_finetune_lr(_preset("beit"), 1024)[0] == 4e-3
    # SimMIM: lr, warmup lr and min lr all × batch / 512
    assert scaled_finetune_lr(_preset("simmim"), 2048) == pytest.approx((5e-3, 1e-6, 1e-6))


def _mae_lr(it: float, lr: float, min_lr: float, warmup: float, epochs: float) -> float:
    """facebookresearch/mae util/lr_sched.py adjust_learning_rate, transcribed (epoch = it / iters_per_epoch)."""
    if it < warmup:
        return lr * it / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (epochs - warmup)))


def test_per_update_schedule_is_mae_lr_sched_and_keeps_layer_scales():
    from bench.protocols._finetune_train import make_scheduler
    preset = _preset("mae")
    p1, p2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p1], "lr_scale": 1.0}, {"params": [p2], "lr_scale": 0.5}], lr=2e-3)
    epochs, steps, warmup = 4, 10, 1.0
    sched = make_scheduler(opt, preset, epochs, warmup, steps, 0.0, 1e-6)
    for update in range(epochs * steps):
        sched.step_update(update)
        want = _mae_lr(update / steps, 2e-3, 1e-6, warmup, epochs)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-9, abs=1e-15), update
        assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * want, rel=1e-9, abs=1e-15)


def test_per_epoch_schedule_is_deit_timm03_cosine():
    from bench.protocols._finetune_train import make_scheduler
    preset = _preset("deit")
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = make_scheduler(opt, preset, 300, 5, 100, 1e-6, 1e-5)
    for t in (0, 3, 5, 150, 299):
        sched.step(t)
        # timm 0.3 CosineLRScheduler (DeiT's create_scheduler): linear warmup, then the cosine from t = 0
        want = 1e-6 + t * (1e-3 - 1e-6) / 5 if t < 5 else 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / 300))
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-9), t


def test_by_arch_follows_the_paper_per_architecture():
    mae = _preset("mae")
    b, l, h = (effective_preset(mae, a) for a in ("vit_base_patch16_224", "vit_large_patch16_224",
                                                  "vit_huge_patch14_224"))
    assert (b.base_lr, b.layer_decay, b.drop_path, b.epochs) == (5e-4, 0.65, 0.1, 100)   # FINETUNE.md ViT-B
    assert (l.base_lr, l.layer_decay, l.drop_path, l.epochs) == (1e-3, 0.75, 0.2, 50)
    assert (h.base_lr, h.layer_decay, h.drop_path, h.epochs) == (1e-3, 0.75, 0.3, 50)
    assert effective_preset(_preset("ibot"), "vit_small_patch16_224").epochs == 200


# ------------------------------------------------------------------------------------------------ the model
def test_model_takes_every_backbone_tensor_and_only_head_and_fc_norm_are_new():
    from bench.protocols._finetune_train import build_finetune_model
    bb = _tiny_backbone(**TINY_VIT)
    model, info = build_finetune_model(bb, _preset("mae"), 7, 32)
    assert sorted(info["new_tensors"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(info["dropped_tensors"]) == ["norm.bias", "norm.weight"]   # MAE: del self.norm
    src = bb.model.state_dict()
    for k, v in model.state_dict().items():
        if k in src and k != "pos_embed":
            assert torch.equal(v, src[k]), k
    assert info["grid"] == [2, 2] and model.pos_embed.shape[1] == 1 + 4   # resampled once to 32 px
    assert model.head.weight.std() < 1e-4 and model.head.out_features == 7   # trunc_normal(std=2e-5)
    # token pooling keeps the pre-trained norm: nothing dropped
    _, info = build_finetune_model(bb, _preset("ibot"), 7, 32)
    assert info["dropped_tensors"] == [] and sorted(info["new_tensors"]) == ["head.bias", "head.weight"]


def test_a_backbone_that_does_not_fit_is_an_error():
    from bench.protocols._finetune_train import build_finetune_model
    bb = _tiny_backbone(**TINY_VIT)
    bb.report.model_kwargs = {**TINY_VIT, "embed_dim": 64}
    with pytest.raises(CheckpointError, match="does not take the backbone's weights"):
        build_finetune_model(bb, _preset("mae"), 7, 32)


# --------------------------------------------------------------------------------------------- runs on the mini
def _ctx(mini_root, cache, backbone=None):
    from bench.data import DataRoot
    from bench.runner import RunContext
    return RunContext(dataset="imagenet", data_root=DataRoot(mini_root, mini=True, origin="test"),
                      backbone=backbone or _tiny_backbone(**TINY_VIT), resolution=32, cache_dir=cache, quick=True,
                      options={"ckpt_every": 2})


class _Stop(Exception):
    pass


def test_resume_inside_an_epoch_equals_the_uninterrupted_run(mini_root, tmp_path, monkeypatch):
    from bench.protocols import _finetune_train
    from bench.runner import run_protocol
    over = {"quick_epochs": 2, "quick_batch_size": 32, "quick_train_subset": 192, "model_ema": True,
            "model_ema_decay": 0.9}
    ref, _, _ = run_protocol("finetune", _ctx(mini_root, tmp_path / "c1"), preset="mae", overrides=over,
                             out_dir=tmp_path / "o1")

    def stop(epoch, update):
        if (epoch, update) == (1, 2):   # after update 3 of epoch 1: the checkpoint after update 2 is the last
            raise _Stop
    monkeypatch.setattr(_finetune_train, "AFTER_UPDATE_HOOKS", [stop])
    with pytest.raises(_Stop):
        run_protocol("finetune", _ctx(mini_root, tmp_path / "c2"), preset="mae", overrides=over,
                     out_dir=tmp_path / "o2")
    monkeypatch.setattr(_finetune_train, "AFTER_UPDATE_HOOKS", [])
    rec, _, _ = run_protocol("finetune", _ctx(mini_root, tmp_path / "c2"), preset="mae", overrides=over,
                             out_dir=tmp_path / "o2")
    assert ref["details"]["resumed_from"] is None and rec["details"]["resumed_from"] == {"epoch": 1, "update": 2}
    assert ref["details"]["updates_per_epoch"] == 6
    assert [h["train_loss"] for h in rec["details"]["history"]] == pytest.approx(
        [h["train_loss"] for h in ref["details"]["history"]], rel=1e-5)
    assert rec["metrics"] == pytest.approx(ref["metrics"])
    assert "top1_ema" in rec["metrics"]


def test_non_finite_loss_stops_with_a_clear_error(mini_root, tmp_path, monkeypatch):
    from bench.protocols import _finetune_train
    from bench.runner import run_protocol

    def nan_loss(preset, mixup):
        return lambda logits, target: logits.sum() * float("nan")
    monkeypatch.setattr(_finetune_train, "make_criterion", nan_loss)
    with pytest.raises(NonFiniteError, match="fine-tuning epoch 0 update 0: loss is nan; lower the learning rate"):
        run_protocol("finetune", _ctx(mini_root, tmp_path / "c"), preset="mae",
                     overrides={"quick_train_subset": 64, "quick_batch_size": 32}, out_dir=tmp_path / "o")
    assert not list((tmp_path / "o").rglob("*.json"))


@pytest.mark.parametrize("model,preset", [("resnet18", "deit"), ("vit_tiny_patch16_224", "mae")])
def test_cli_fine_tunes_vit_and_resnet_on_the_miniature(mini_root, tmp_path, model, preset):
    out = tmp_path / "o"
    rc = main(["run", "--protocol", "finetune", "--preset", preset, "--model", model, "--data-root", str(mini_root),
               "--quick", "--resolution", "32", "--out", str(out), "--micro-batch", "16",
               "--set", "quick_epochs=1", "--set", "quick_train_subset=64", "--set", "quick_batch_size=32"])
    assert rc == 0
    (path,) = (out / "runs").glob("*.json")
    rec = json.loads(path.read_text())
    d = rec["details"]
    # the global batch of 32 ran as 2 micro-batches of 16, and the record says both
    assert (d["batch"], d["micro_batch"], d["accumulation"], d["updates_per_epoch"]) == (32, 16, 2, 2)
    assert rec["metrics"]["top1_max"] >= rec["metrics"]["top1"] and 0 <= rec["metrics"]["top5"] <= 100
    assert rec["comparable"] is False and "--quick" in rec["not_comparable_because"]
    assert d["paper_number_is"] == "top1_max" and rec["headline"][0] == "top1_max"
    head = ["fc.bias", "fc.weight"] if model == "resnet18" else ["fc_norm.bias", "fc_norm.weight", "head.bias",
                                                                "head.weight"]
    assert sorted(d["model"]["new_tensors"]) == head
    assert d["model"]["model_kwargs"]["drop_path_rate"] == 0.1
    assert rec["dataset"]["counts"] == {"imagenet/train": 64, "imagenet/val": 360}


# ----------------------------------------------------------------------------------------------- leaderboards
FINETUNE_TABLES = ("mae_finetune", "beit_imagenet_finetune", "beit_cifar100_imagenet", "ibot_finetune_in1k",
                   "ibot_finetune_in22k", "milan_finetune", "simmim_comparison", "mocov3_imagenet", "deit_ablation")


def test_every_fine_tuning_table_renders_each_documented_row():
    from bench.reference import reference_mapping, reference_table
    from bench.tables import build_tables, table_rows
    mapping = reference_mapping()
    rendered = {}
    for table in build_tables([]):
        for cells in table_rows(table)[1]:
            rendered.setdefault(cells[0], []).append((table.protocol, table.dataset, tuple(cells)))
    for name in FINETUNE_TABLES:
        columns = mapping["tables"][name]
        want = [r for r in reference_table(name) if r["value"] and r["protocol"] in columns]
        got = rendered.get(name, [])
        # one printed row per documented value (each table has one metric per protocol/dataset column)
        assert len(got) == len(want), name
        values = sorted(v for *_, cells in got for v in cells[6:-2] if v)
        assert values == sorted(r["value"] for r in want), name
    # both columns of SimMIM's and MoCo v3's tables, each with its own protocol; BEiT's CIFAR-100 column
    assert {p for p, _, _ in rendered["simmim_comparison"]} == {"finetune", "linear"}
    assert {p for p, _, _ in rendered["mocov3_imagenet"]} == {"finetune", "linear"}
    assert {(d, cells[4]) for _, d, cells in rendered["beit_cifar100_imagenet"]} >= {("cifar100", "cifar100"),
                                                                                   ("imagenet", "beit")}
    assert {cells[4] for _, _, cells in rendered["deit_ablation"]} == {"deit", "deit_384"}


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused(mini_root, tmp_path, capsys):
    rc = main(["run", "--protocol", "finetune", "--model", "vit_tiny_patch16_224", "--data-root", str(mini_root),
               "--quick", "--resolution", "32", "--out", str(tmp_path), "--micro-batch", "24"])
    assert rc == 2
    assert "global batch of 64 does not split into 1 process(es) x micro-batches of 24" in capsys.readouterr().err


def test_randaugment_posterize_to_zero_bits_is_black_as_under_older_pillow():
    from PIL import Image
    from bench.protocols._finetune_train import _posterize_zero_bits_ok
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert not np.asarray(_posterize_zero_bits_ok(img, 0)).any()
    # 1..7 bits: Pillow's own posterize, i.e. the low bits cleared
    assert np.array_equal(np.asarray(_posterize_zero_bits_ok(img, 3)), np.asarray(img) & 0b11100000)
    assert _posterize_zero_bits_ok(img, 8) is img
