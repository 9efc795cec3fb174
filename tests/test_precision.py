"""Mixed precision runs the same lines on the CPU as on a GPU: `--amp bf16` autocasts every training protocol and
extraction here, its loss falls and its metric agrees with float32's; a float16 GradScaler skips a step whose
gradients overflowed. Each run checks, with a forward hook, that the layers really computed in bfloat16.

Tolerances: bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.2%). Tiny models on the miniatures
give a few hundred test images, where one image is 0.3-2.8 points, and rounding moves a few borderline
predictions, so metrics must agree within `TOL` points (a handful of images); features within 2% relative.
"""
from __future__ import annotations

import importlib
import json

import pytest
import torch
import torch.nn as nn

from bench.errors import BenchError
from bench.precision import Precision, amp_arg, amp_key, resolve_precision
from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest

TOL = {"knn": 2.0, "linear": 3.0, "semisup": 3.0, "finetune": 3.0, "detection": 10.0, "segmentation": 5.0,
       "voc_transfer": 10.0, "coco_detection": 10.0}

_LOOPS = ("_linear_train", "_semisup_train", "_finetune_train", "_detection_engine", "_segmentation_train",
          "_voc_transfer_cls", "_voc_transfer_det", "_voc_transfer_seg")


# ----------------------------------------------------------------------------------------------- the dtype choice
def test_the_device_chooses_only_the_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu, "float16") == Precision("cpu", None)     # CPU records stay float32
    assert resolve_precision("auto", cuda, "float16") == Precision("cuda", "float16")
    assert resolve_precision("auto", cuda, None) == Precision("cuda", None)
    assert resolve_precision("bf16", cpu, "float16") == Precision("cpu", "bfloat16")
    assert resolve_precision("fp16", cpu) == Precision("cpu", "float16")
    assert resolve_precision("off", cuda, "bfloat16") == Precision("cuda", None)
    # a GradScaler only where the dtype needs one
    assert Precision("cpu", "float16").grad_scaler().is_enabled()
    assert not Precision("cpu", "bfloat16").grad_scaler().is_enabled()
    assert not Precision("cpu", None).grad_scaler().is_enabled()
    with Precision("cpu", "bfloat16").autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with Precision("cpu", None).autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    # the flag before it took a value meant bf16; run keys keep its old values
    assert amp_arg(True) == "bf16" and amp_arg(False) == "auto"
    assert (amp_key("auto"), amp_key("bf16"), amp_key("fp16")) == (False, True, "fp16")
    with pytest.raises(BenchError, match="--amp half: not a precision"):
        amp_arg("half")


def test_grad_scaler_skips_the_step_whose_gradients_overflowed():
    """torch.amp.GradScaler on the CPU with float16: an inf in a gradient skips opt.step() and halves the scale;
    the next finite step updates the weights (bench.train.scaled_step and voc_transfer's clip-then-step)."""
    from bench.protocols._voc_transfer_nets import clip_and_step
    from bench.train import scaled_step
    for step in ("scaled", "clipped"):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        prec = Precision("cpu", "float16")
        scaler = prec.grad_scaler()
        x = torch.randn(8, 4)

        def one_step():
            with prec.autocast():
                loss = model(x).float().pow(2).mean()
            if step == "scaled":
                scaled_step(loss, opt, scaler)
            else:
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                clip_and_step(opt, model, 1.0, scaler)
        before = [p.detach().clone() for p in model.parameters()]
        scale = scaler.get_scale()
        hook = model.weight.register_hook(lambda g: g * float("inf"))
        one_step()
        hook.remove()
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), step
        assert scaler.get_scale() == scale * 0.5
        one_step()
        assert not torch.equal(before[0], model.weight), step


# ---------------------------------------------------------------------------------------- runs on the miniatures
class _DtypeProbe:
    """The output dtypes of every Conv2d / Linear that runs while it is open (a global forward hook: protocols that
    rebuild the model from the backbone are seen too), i.e. what autocast really computed in."""

    def __enter__(self):
        self.seen: set[torch.dtype] = set()

        def hook(m, _inputs, out):
            if isinstance(m, (nn.Conv2d, nn.Linear)) and torch.is_tensor(out):
                self.seen.add(out.dtype)
        self._handle = nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


@pytest.fixture
def losses(monkeypatch):
    """Every training loop hands each loss to check_finite: collect them (then check as usual)."""
    from bench.train import check_finite
    seen: list[float] = []

    def logging_check(loss, where, *a, **kw):
        seen.append(float(loss.detach().float().mean()))
        check_finite(loss, where, *a, **kw)
    for name in _LOOPS:
        monkeypatch.setattr(importlib.import_module(f"bench.protocols.{name}"), "check_finite", logging_check)
    return seen


def _backbone(kind: str):
    from bench.backbones import Backbone, LoadReport, Preprocessing
    torch.manual_seed(0)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                              nn.Flatten()).eval()
        return Backbone(model, LoadReport(source="random", arch="tiny", library="test", family="random",
                                          feature_mode="pool"), Preprocessing(), weights_id="test:tiny-conv16")
    if kind == "resnet":
        from timm.models.resnet import BasicBlock, ResNet
        model = ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), num_classes=0)
        return Backbone(model, LoadReport("random", "tiny", "timm", "random"), Preprocessing(), "random:tiny-resnet")
    from test_finetune import TINY_VIT, _tiny_backbone
    return _tiny_backbone(**TINY_VIT)


def _run(protocol, mini_root, tmp_path, amp, *, backbone="conv", dataset="imagenet", preset=None, overrides=None,
         resolution=32, **kw):
    from bench.data import DataRoot
    from bench.runner import RunContext, run_protocol
    ctx = RunContext(dataset=dataset, data_root=DataRoot(mini_root, mini=True, origin="test"),
                     backbone=_backbone(backbone), resolution=resolution, cache_dir=tmp_path / f"cache-{amp}",
                     quick=True, amp=amp, **kw)
    with _DtypeProbe() as probe:
        rec, _, _ = run_protocol(protocol, ctx, preset=preset, overrides=overrides or {}, out_dir=tmp_path / amp)
    return rec, probe.seen


def _falls(values: list[float], k: int) -> bool:
    return sum(values[-k:]) / k < sum(values[:k]) / k


def _check(protocol, headline, fp32, bf16, seen, losses_bf16, k):
    assert bf16["precision"]["amp"] == "bf16" and "bfloat16" in bf16["precision"].values()
    assert set(fp32["precision"].values()) - {"auto"} == {"float32"}
    assert torch.bfloat16 in seen                                   # the layers ran in bf16, not just the record
    assert bf16["run_id"] != fp32["run_id"]
    if losses_bf16 is not None:
        assert len(losses_bf16) >= 2 * k and _falls(losses_bf16, k), losses_bf16
    assert abs(bf16["metrics"][headline] - fp32["metrics"][headline]) <= TOL[protocol], (fp32["metrics"],
                                                                                         bf16["metrics"])


def test_extraction_and_knn_in_bf16_agree_with_float32(mini_root, tmp_path):
    fp32, _ = _run("knn", mini_root, tmp_path, "auto")
    bf16, seen = _run("knn", mini_root, tmp_path, "bf16")
    _check("knn", "top1", fp32, bf16, seen, None, 0)
    assert bf16["precision"]["extraction"] == "bfloat16" and bf16["inputs"]["imagenet/val"]["amp"] is True
    assert fp32["metrics"]["top1"] > 30                             # chance is 10: the features carry the digits
    # the features themselves: the cache keeps the two apart, and they differ by bf16 rounding only
    from bench.cache import load_feature_split
    entries = {amp: next((tmp_path / f"cache-{amp}" / "features").glob("*/val.npz")).parent for amp in ("auto", "bf16")}
    a, b = (torch.from_numpy(load_feature_split(entries[amp], "val").features) for amp in ("auto", "bf16"))
    assert entries["auto"].name != entries["bf16"].name
    assert 0 < (a - b).norm() / a.norm() < 0.02


@pytest.mark.parametrize("protocol, preset, backbone, overrides, k", [
    ("linear", "mocov2", "conv", {"base_lr": 0.05, "quick_epochs": 4, "quick_batch_size": 32,
                                  "quick_train_images": 256}, 8),
    ("semisup", "swav", "conv", {"quick_epochs": 6, "base_lr": 0.005, "head_lr": 0.05, "by_percent": {}}, 3),
    ("finetune", "mae", "vit", {"quick_epochs": 3, "quick_batch_size": 32, "quick_train_subset": 192,
                                "base_lr": 2e-3, "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0, "auto_augment": "",
                                "drop_path": 0.0, "layer_decay": 1.0}, 6),
])
def test_classification_training_in_bf16(protocol, preset, backbone, overrides, k, mini_root, tmp_path, losses):
    fp32, _ = _run(protocol, mini_root, tmp_path, "auto", preset=preset, backbone=backbone, overrides=overrides)
    losses.clear()
    bf16, seen = _run(protocol, mini_root, tmp_path, "bf16", preset=preset, backbone=backbone, overrides=overrides)
    _check(protocol, "top1", fp32, bf16, seen, list(losses), k)


def test_finetune_in_float16_goes_through_the_grad_scaler(mini_root, tmp_path, losses, monkeypatch):
    """The MAE recipe's own dtype (fp16 + GradScaler), on the CPU: the scaler scales every loss and its state
    moves; the run finishes and its loss falls."""
    scaled = []
    real = torch.amp.GradScaler.scale
    monkeypatch.setattr(torch.amp.GradScaler, "scale", lambda self, x: scaled.append(self.is_enabled()) or
                        real(self, x))
    over = {"quick_epochs": 2, "quick_batch_size": 32, "quick_train_subset": 192, "base_lr": 2e-3, "mixup": 0.0,
            "cutmix": 0.0, "reprob": 0.0, "auto_augment": "", "drop_path": 0.0, "layer_decay": 1.0}
    rec, seen = _run("finetune", mini_root, tmp_path, "fp16", preset="mae", backbone="vit", overrides=over)
    assert rec["precision"]["train"] == "float16" and torch.float16 in seen
    assert scaled and all(scaled) and _falls(losses, 4)


@pytest.mark.parametrize("protocol, dataset, preset, backbone, overrides, resolution, headline, k", [
    ("detection", "voc", None, "resnet", {"quick_iterations": 10, "precise_bn_iters": 0}, None, "AP50", 3),
    ("segmentation", "ade20k", None, "resnet", {"quick_iterations": 12}, 32, "mIoU", 3),
    ("voc_transfer", "voc", None, "resnet", {"quick_iterations": 24}, 32, "mAP", 6),
    ("voc_transfer", "voc", "jigsawpp-detection", "resnet", {"quick_iterations": 30, "ms_test_scales": [32, 48]},
     32, "mAP", 10),
    ("voc_transfer", "voc", "deepcluster-segmentation-all", "resnet", {"quick_iterations": 8, "batch_size": 2}, 32,
     "mIoU", 2),
    ("coco_detection", "coco", None, "resnet", {"quick_iterations": 6}, None, "AP50", 3),
])
def test_dense_training_in_bf16(protocol, dataset, preset, backbone, overrides, resolution, headline, k, mini_root,
                                tmp_path, losses):
    kw = dict(dataset=dataset, preset=preset, backbone=backbone, overrides=overrides, resolution=resolution)
    fp32, _ = _run(protocol, mini_root, tmp_path, "auto", **kw)
    losses.clear()
    bf16, seen = _run(protocol, mini_root, tmp_path, "bf16", **kw)
    _check(protocol, headline, fp32, bf16, seen, list(losses) if protocol != "coco_detection" else None, k)


def test_cli_amp_flag_is_recorded(mini_root, tmp_path):
    """`--amp` alone still means bf16 (its meaning before it took a value); the record names what ran."""
    out = tmp_path / "r"
    assert run_cli("run", "--protocol", "knn", "--data-root", mini_root, "--model", "resnet18", "--resolution", "32",
                   "--out", out, "--amp", "-q") == 0
    rec = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert rec["precision"] == {"amp": "bf16", "extraction": "bfloat16"} and rec["run_key"]["amp"] is True
    with pytest.raises(SystemExit):
        run_cli("run", "--protocol", "knn", "--amp", "half")


# ------------------------------------------------------------------------------- k-NN's device paths, on the CPU
def test_knn_faiss_index_follows_the_device_and_adds_in_chunks(monkeypatch):
    """faiss-gpu's index on a GPU when faiss has GPU support, the CPU index otherwise; the training set is added a
    chunk at a time and gives the torch path's neighbours (float16 stored features, as a 1.28M × 1024 file)."""
    faiss = pytest.importorskip("faiss")
    from bench.protocols import knn
    assert knn.faiss_index_kind("cpu") == "IndexFlatIP"
    assert knn.faiss_index_kind("cuda") == ("GpuIndexFlatIP" if hasattr(faiss, "StandardGpuResources")
                                            else "IndexFlatIP")

    class GpuFaiss:
        StandardGpuResources = object
    monkeypatch.setattr(knn, "_faiss", lambda: GpuFaiss)
    assert knn.faiss_index_kind("cuda") == "GpuIndexFlatIP" and knn.faiss_index_kind("cpu") == "IndexFlatIP"
    monkeypatch.undo()
    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=g).numpy().astype("float16")
    test = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    ref = knn.knn_topk_neighbors(train, test, 7, train_chunk=1000, normalize=True)
    for backend in ("faiss", "torch"):
        v, i = knn.knn_topk_neighbors(train, test, 7, train_chunk=64, normalize=True, backend=backend)
        assert torch.equal(i, ref[1]) and torch.allclose(v, ref[0], atol=1e-6), backend
