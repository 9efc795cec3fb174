"""VOC detection protocol: reader, schedule, resume, NaN guard, heads, CLI, and that training learns."""
import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from conftest import run_cli

from bench.backbones import Backbone, LoadReport, Preprocessing
from bench.data import DataRoot, open_dataset
from bench.data.voc import VOC_CLASSES
from bench.errors import NonFiniteError
from bench.protocols.detection import DetectionPreset, run_detection
from bench.protocols._detection_engine import DetectionSamples, lr_factor, train_detector
from bench.protocols._detection_evaluate import evaluate_voc
from bench.protocols._detection_model import build_detector, set_test_size

# Small enough for a CPU test: 96-px images, few proposals, a 32-channel pyramid.
SMALL = dict(head="fpn", norm="syncbn", freeze_at=0, fpn_channels=32, batch_size=2, lr=0.01, warmup_iters=10,
             train_min_sizes=(96,), test_size=96, max_size=160, rois_per_image=32, rpn_pre_nms_train=200,
             rpn_post_nms_train=50, rpn_pre_nms_test=100, rpn_post_nms_test=30)


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest


def _tiny_resnet():
    from timm.models.resnet import BasicBlock, ResNet
    return ResNet(BasicBlock, [1, 1, 1, 1], channels=(16, 32, 64, 128), num_classes=0)


def _ctx(mini_root, model, tmp_path=None, **kw):
    from bench.runner import RunContext
    bb = Backbone(model, LoadReport("random", "tiny", "timm", "random"), Preprocessing(), "random:tiny-resnet")
    return RunContext(dataset="voc", data_root=DataRoot(mini_root, True, "test"), backbone=bb,
                      cache_dir=tmp_path, **kw)


def test_voc_reader_keeps_difficult_and_shifts_to_detectron2_coordinates(mini_root):
    ds = open_dataset("voc", mini_root, "2007-test", None, mini=True)
    n_difficult = 0
    for i in range(len(ds)):
        img, t = ds[i]
        root = ET.parse(ds.voc.targets[i]).getroot()
        objs = root.findall("object")
        xml_boxes = [[float(o.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objs]
        assert t["boxes"].tolist() == [[b[0] - 1, b[1] - 1, b[2], b[3]] for b in xml_boxes]
        assert [VOC_CLASSES[c - 1] for c in t["labels"]] == [o.find("name").text for o in objs]
        assert t["difficult"].tolist() == [o.find("difficult").text == "1" for o in objs]
        assert t["boxes"][:, 2].max() <= img.width and t["boxes"][:, 3].max() <= img.height
        n_difficult += int(t["difficult"].sum())
    assert n_difficult > 0
    assert len(open_dataset("voc", mini_root, "2012-trainval", None, mini=True)) > 0
    with pytest.raises(Exception, match="2012-test|split"):
        open_dataset("voc", mini_root, "2012-test", None, mini=True)


def test_lr_schedule_is_detectron2_warmup_multistep():
    # WarmupMultiStepLR, linear warmup: factor = 0.001·(1-α) + α with α = it/100, then ×0.1 at 18k and 22k
    steps = (18000, 22000)
    assert lr_factor(0, 100, steps) == pytest.approx(0.001)
    assert lr_factor(50, 100, steps) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(100, 100, steps) == 1.0 and lr_factor(17999, 100, steps) == 1.0
    assert lr_factor(18000, 100, steps) == pytest.approx(0.1) and lr_factor(23999, 100, steps) == pytest.approx(0.01)


def _train(mini_root, iterations, run_dir):
    preset = DetectionPreset(**{**SMALL, "iterations": 4, "checkpoint_every": 2})
    preset = dataclasses.replace(preset, iterations=iterations)
    torch.manual_seed(0)
    model = build_detector(_tiny_resnet(), preset, mean=(0.5,) * 3, std=(0.5,) * 3)
    samples = DetectionSamples([open_dataset("voc", mini_root, "2007-trainval", None, mini=True)])
    info = train_detector(model, samples, preset, device=torch.device("cpu"), seed=3, run_dir=run_dir)
    return model, info


def test_resume_after_interruption_gives_the_uninterrupted_weights(mini_root, tmp_path):
    straight, _ = _train(mini_root, 4, tmp_path / "a")
    _train(mini_root, 2, tmp_path / "b")                      # "interrupted" after 2 iterations
    resumed, info = _train(mini_root, 4, tmp_path / "b")
    assert info["start_iteration"] == 2
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_non_finite_loss_raises(mini_root):
    class NanLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, images, targets):
            return {"loss": self.w * float("nan")}
    samples = DetectionSamples([open_dataset("voc", mini_root, "2007-trainval", None, mini=True)])
    with pytest.raises(NonFiniteError, match="iteration 0"):
        train_detector(NanLoss(), samples, DetectionPreset(**{**SMALL, "iterations": 2}), device=torch.device("cpu"),
                       seed=0, run_dir=None)


@pytest.mark.parametrize("head,arch", [("c4", "test_resnet"), ("vit", "test_vit")])
def test_heads_train_and_predict_in_image_coordinates(mini_root, head, arch):
    import timm
    preset = DetectionPreset(**{**SMALL, "head": head, "pooler_resolution": 7,
                                "norm": "frozen" if head == "vit" else "syncbn"})
    model = build_detector(timm.create_model(arch, num_classes=0), preset, mean=(0.5,) * 3, std=(0.5,) * 3)
    samples = DetectionSamples([open_dataset("voc", mini_root, "2007-trainval", None, mini=True)])
    images, targets = zip(samples[(0, False)], samples[(1, True)])
    losses = model(list(images), list(targets))
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    set_test_size(model, 96, 160)
    with torch.no_grad():
        out = model([images[0]])[0]
    h, w = images[0].shape[-2:]
    assert len(out["boxes"]) > 0 and out["boxes"][:, 2].max() <= w + 1e-3 and out["boxes"][:, 3].max() <= h + 1e-3


def test_trained_detector_beats_untrained(mini_root, tmp_path):
    preset = DetectionPreset(**{**SMALL, "iterations": 100, "steps": (80,), "checkpoint_every": 100})
    torch.manual_seed(0)
    result = run_detection(_ctx(mini_root, _tiny_resnet(), tmp_path), preset)
    torch.manual_seed(0)
    untrained = build_detector(_tiny_resnet(), preset, mean=Preprocessing().mean, std=Preprocessing().std)
    set_test_size(untrained, preset.test_size, preset.max_size)
    test = open_dataset("voc", mini_root, "2007-test", None, mini=True)
    before, _ = evaluate_voc(untrained, test, VOC_CLASSES, device=torch.device("cpu"))
    after = result.metrics
    # the miniature's classes are digits in random colours (shape only): 100 iterations of a tiny net reach ~12
    assert after["AP50"] > 8 and after["AP50"] > before["AP50"] + 5
    assert after["AP"] > before["AP"] and after["AP50"] >= after["AP"] >= after["AP75"]
    assert result.details["trials"][0]["classes_evaluated"] == ["bottle", "pottedplant", "tvmonitor"]


def test_cli_quick_run_records_ap_and_trials(mini_root, tmp_path, capsys):
    out = tmp_path / "results"
    assert run_cli("run", "--protocol", "detection", "--data-root", mini_root, "--model", "test_resnet", "--quick",
                   "--out", out, "--trials", "2") == 0
    rec = json.loads(next(Path(out).rglob("*.json")).read_text())
    m = rec["metrics"]
    assert {"AP50", "AP", "AP75", "AP50_area", "AP50_std"} <= set(m) and not rec["comparable"]
    trials = rec["details"]["trials"]
    assert [t["seed"] for t in trials] == [0, 1]
    assert m["AP50"] == pytest.approx(sum(t["metrics"]["AP50"] for t in trials) / 2)
    assert rec["run_key"]["options"] == {"trials": 2, "backend": "torchvision"}
    assert trials[0]["recall_grid"] == "devkit" and trials[0]["recall_thresholds"][6:8] == [0.6, 0.7]
    assert trials[0]["detections_as"].startswith("detectron2 text round-trip")


def test_detectron2_backend_says_it_is_not_installed(mini_root, capsys):
    pytest.importorskip("torchvision")
    try:
        import detectron2  # noqa: F401
        pytest.skip("detectron2 is installed here")
    except ImportError:
        pass
    assert run_cli("run", "--protocol", "detection", "--data-root", mini_root, "--model", "test_resnet", "--quick",
                   "--backend", "detectron2") != 0
    assert "detectron2 is not installed" in capsys.readouterr().err
