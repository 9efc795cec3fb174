"""Segmentation protocol: layer decay groups (vs BEiT's rule), heads, slide inference, training on the miniature."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.backbones import load_backbone
from bench.errors import BenchError, NonFiniteError
from bench.protocols.segmentation import SegPreset, build_seg_model
from bench.protocols._segmentation_model import slide_inference
from bench.protocols._segmentation_optim import layer_decay_groups, poly_warmup_factor
from bench.protocols._segmentation_train import TrainConfig, train_segmentation
from tests.conftest import run_cli


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest


def _beit_layer_id(name: str, num_max_layer: int) -> int:
    """Transcription of BEiT mmcv_custom/layer_decay_optimizer_constructor.py:get_num_layer_for_vit."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks"):
        return int(name.split(".")[2]) + 1
    return num_max_layer - 1


def test_layer_decay_groups_follow_beit():
    bb = load_backbone(None, "test_vit")
    model = build_seg_model(bb, SegPreset(out_indices=(1, 2, 3, 5), channels=16), crop=32, channels=16)
    heads = torch.nn.ModuleList([model.neck, model.decode, model.aux])
    groups = layer_decay_groups(bb.model, heads, weight_decay=0.05, layer_decay=0.65)
    depth = len(bb.model.blocks)
    names = {id(p): f"backbone.{n}" for n, p in bb.model.named_parameters()}
    names.update({id(p): f"decode_head.{n}" for n, p in heads.named_parameters()})
    seen = 0
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            layer_id = _beit_layer_id(name, depth + 2)
            assert g["lr_scale"] == pytest.approx(0.65 ** (depth + 1 - layer_id)), name
            no_wd = p.ndim == 1 or name.endswith(".bias") or name in ("backbone.pos_embed", "backbone.cls_token")
            assert g["weight_decay"] == (0.0 if no_wd else 0.05), name
            seen += 1
    assert seen == len(names)            # every parameter in exactly one group
    frozen = layer_decay_groups(bb.model, heads, 0.05, 0.65, train_backbone=False)
    assert sum(len(g["params"]) for g in frozen) == len(list(heads.parameters()))


def test_poly_warmup_schedule_matches_mmcv_endpoints():
    total, warm = 1000, 100
    assert poly_warmup_factor(0, total, warm, 1e-6) == pytest.approx(1e-6)
    # inside warmup: the poly lr scaled by the linear ramp from warmup_ratio to 1
    assert poly_warmup_factor(50, total, warm, 1e-6) == pytest.approx((1 - 50 / total) * (1 - 0.5 * (1 - 1e-6)))
    assert poly_warmup_factor(warm, total, warm) == pytest.approx(1 - warm / total)
    assert poly_warmup_factor(total, total, warm) == pytest.approx(0.0)


def test_vit_pyramid_and_heads_shapes():
    bb = load_backbone(None, "test_vit")
    model = build_seg_model(bb, SegPreset(out_indices=(1, 2, 3, 5), channels=16), crop=64, channels=16).train()
    logits, aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 150, 16, 16) and aux.shape == (2, 150, 4, 4)   # 1/4 and 1/16 of the input
    linear = build_seg_model(load_backbone(None, "test_vit"), SegPreset(head="linear", out_indices=(-4, -3, -2, -1),
                             in_index=(0, 1, 2, 3), freeze_backbone=True), crop=64, channels=16)
    assert linear.decode.bn.num_features == 4 * bb.model.embed_dim
    linear.train()
    assert not linear.features.model.training          # frozen backbone stays in inference mode
    linear(torch.randn(2, 3, 64, 64))[0].sum().backward()
    assert all(p.grad is None for p in linear.features.parameters())
    assert linear.decode.conv_seg.weight.grad is not None


def test_slide_inference_equals_whole_image_for_pointwise_model():
    conv = torch.nn.Conv2d(3, 5, 1)

    class Pointwise(torch.nn.Module):
        def forward(self, x):
            return conv(x), None

    img = torch.randn(1, 3, 37, 53)
    out = slide_inference(Pointwise(), img, crop=16, stride=11, num_classes=5)
    torch.testing.assert_close(out, conv(img).detach(), rtol=1e-5, atol=1e-5)


def test_nan_loss_raises():
    bb = load_backbone(None, "test_resnet")
    model = build_seg_model(bb, SegPreset(aux_weight=0), crop=32, channels=8)
    data = [(torch.full((3, 32, 32), float("nan")), torch.zeros(32, 32, dtype=torch.long))] * 4
    cfg = TrainConfig(3, 2, 1e-3, 0, 1e-6, 1.0, 0.0, (0.9, 0.999), 0.4, 10, False)
    groups = layer_decay_groups(bb.model, model.decode, 0.05, 0.65)
    with pytest.raises(NonFiniteError, match="iteration 0"):
        train_segmentation(model, groups, data, cfg, device=torch.device("cpu"), run_dir=None)


def _run(mini_root, tmp_path, *extra):
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "segmentation", "--data-root", mini_root, "--model", "test_resnet",
                   "--quick", "--resolution", "48", "--out", out, *extra) == 0
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def test_trained_head_beats_untrained_and_resumes(mini_root, tmp_path):
    untrained = _run(mini_root, tmp_path / "u", "--set", "quick_iterations=0")[0]
    trained = _run(mini_root, tmp_path / "t", "--set", "quick_iterations=30")[0]
    for rec in (untrained, trained):
        assert set(rec["metrics"]) == {"mIoU", "mAcc", "aAcc"} and not rec["comparable"]
    assert trained["details"]["resumed_from"] == 0
    assert trained["metrics"]["mIoU"] > untrained["metrics"]["mIoU"] + 5
    assert trained["metrics"]["aAcc"] > untrained["metrics"]["aAcc"] + 10
    # The same run again (--force) finds the finished checkpoint and reproduces the numbers without training.
    again = _run(mini_root, tmp_path / "t", "--set", "quick_iterations=30", "--force")[0]
    assert again["details"]["resumed_from"] == 30
    assert again["metrics"] == pytest.approx(trained["metrics"])
    assert Path(trained["details"]["run_dir"], "last.pt").is_file()


def test_mmseg_backend_is_a_clear_error(mini_root, tmp_path, capsys):
    rc = run_cli("run", "--protocol", "segmentation", "--data-root", mini_root, "--model", "test_resnet", "--quick",
                 "--out", tmp_path, "--backend", "mmseg")
    assert rc != 0 and "mmsegmentation" in capsys.readouterr().err


def test_mini_labels_use_ade_ids_and_ignore(mini_root):
    from bench.data import open_dataset
    ds = open_dataset("ade20k", Path(mini_root), "val", None, mini=True)
    labels = np.unique(np.concatenate([ds[i][1].ravel() for i in range(len(ds))]))
    assert 255 in labels and set(labels) - {255} <= {1, 2, 4, 6, 9}    # raw ADE ids 2,3,5,7,10 minus 1
    with pytest.raises(BenchError, match="expected 2000"):
        open_dataset("ade20k", Path(mini_root), "val", None, mini=False)


def test_interrupted_training_resumes_from_last_checkpoint(tmp_path):
    class Flaky(torch.utils.data.Dataset):
        def __init__(self, fail_after):
            self.reads, self.fail_after = 0, fail_after

        def __len__(self):
            return 8

        def __getitem__(self, i):
            self.reads += 1
            if self.reads > self.fail_after:
                raise KeyboardInterrupt
            g = torch.Generator().manual_seed(i)
            return torch.randn(3, 32, 32, generator=g), torch.randint(0, 3, (32, 32), generator=g)

    def fresh():
        torch.manual_seed(0)
        bb = load_backbone(None, "test_resnet")
        model = build_seg_model(bb, SegPreset(aux_weight=0), crop=32, channels=8)
        return model, layer_decay_groups(bb.model, model.decode, 0.05, 0.65)

    cfg = TrainConfig(8, 2, 1e-3, 0, 1e-6, 1.0, 0.0, (0.9, 0.999), 0.0, 4, False)
    model, groups = fresh()
    with pytest.raises(KeyboardInterrupt):   # dies in iteration 7 (reads 13), after the checkpoint at 4
        train_segmentation(model, groups, Flaky(12), cfg, device=torch.device("cpu"), run_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 4
    model, groups = fresh()
    info = train_segmentation(model, groups, Flaky(10 ** 6), cfg, device=torch.device("cpu"), run_dir=tmp_path)
    assert info["resumed_from"] == 4
    assert torch.load(tmp_path / "last.pt", weights_only=True)["iteration"] == 8


def test_killed_training_resumes_to_the_identical_weights(tmp_path):
    """Augmentation draws Python's random (as the mmseg pipeline does) and the head uses dropout: a run killed
    after its checkpoint and resumed must end with exactly the weights of the uninterrupted run."""
    import random as pyrandom

    class Jittered(torch.utils.data.Dataset):
        def __init__(self, fail_after=10 ** 6):
            self.reads, self.fail_after = 0, fail_after

        def __len__(self):
            return 8

        def __getitem__(self, i):
            self.reads += 1
            if self.reads > self.fail_after:
                raise KeyboardInterrupt
            g = torch.Generator().manual_seed(i)
            x = torch.randn(3, 32, 32, generator=g) + pyrandom.uniform(-1, 1) + torch.rand(()).item()
            return x, torch.randint(0, 3, (32, 32), generator=g)

    def fresh():
        torch.manual_seed(0)
        bb = load_backbone(None, "test_resnet")
        model = build_seg_model(bb, SegPreset(aux_weight=0, dropout=0.5), crop=32, channels=8)
        return model, layer_decay_groups(bb.model, model.decode, 0.05, 0.65)

    cfg = TrainConfig(8, 2, 1e-3, 0, 1e-6, 1.0, 0.0, (0.9, 0.999), 0.0, 4, False)
    model, groups = fresh()
    pyrandom.seed(1)
    train_segmentation(model, groups, Jittered(), cfg, device=torch.device("cpu"), run_dir=tmp_path / "a")
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    model, groups = fresh()
    pyrandom.seed(1)
    with pytest.raises(KeyboardInterrupt):   # dies in iteration 7, after the checkpoint at 4
        train_segmentation(model, groups, Jittered(12), cfg, device=torch.device("cpu"), run_dir=tmp_path / "b")
    model, groups = fresh()
    pyrandom.seed(99)                         # a fresh process: nothing of the killed run's RNG state survives
    np.random.seed(99)
    info = train_segmentation(model, groups, Jittered(), cfg, device=torch.device("cpu"), run_dir=tmp_path / "b")
    assert info["resumed_from"] == 4
    resumed = model.state_dict()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
