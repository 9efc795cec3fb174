"""voc_transfer: VOC07 classification AP, Fast R-CNN proposal files and test-time selection, FCN segmentation,
the VOC2012 / proposal miniature, the mapping of the three reference tables, and one CLI run per task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import DataError
from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- classification AP -------------------------------------------------------------------------------------------

def _eleven_point_from_sklearn(scores, devkit):
    """VOC2007 11-point AP written out on sklearn's precision-recall curve (distinct scores, difficult dropped)."""
    from sklearn.metrics import precision_recall_curve
    keep = devkit != 0
    prec, rec, _ = precision_recall_curve((devkit[keep] > 0).astype(int), scores[keep])
    prec, rec = prec[:-1], rec[:-1]          # sklearn's appended (recall 0, precision 1) is not a ranked image
    # the devkit's recall thresholds 0:0.1:1 (k / 10: 0.3 and 0.6 exactly, not linspace's neighbours)
    return np.mean([prec[rec >= k / 10].max() if (rec >= k / 10).any() else 0.0 for k in range(11)])


def test_classification_metrics_match_independent_computations():
    from sklearn.metrics import average_precision_score
    from bench.protocols._voc_transfer_cls import classification_metrics
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(60, 20))
    devkit = rng.choice([1, -1, -1, 0], size=(60, 20)).astype(np.int8)
    scores[devkit > 0] += 0.8
    devkit[:, 19] = -1                       # a class without positives: no AP, left out of both means
    metrics, details = classification_metrics(scores, devkit)
    sk, ele = [], []
    for c in range(19):
        keep = devkit[:, c] != 0
        sk.append(average_precision_score(devkit[keep, c] > 0, scores[keep, c]))
        ele.append(_eleven_point_from_sklearn(scores[:, c], devkit[:, c]))
    assert metrics["mAP"] == pytest.approx(100 * np.mean(sk), abs=1e-9)
    assert metrics["mAP_11pt"] == pytest.approx(100 * np.mean(ele), abs=1e-9)
    assert details["classes_evaluated"] == 19 and details["per_class_ap"][19] is None


def test_krahenbuhl_ap_breaks_ties_against_positives_and_drops_difficult():
    from bench.protocols._voc_transfer_cls import krahenbuhl_ap
    # ranked: 0.9 pos, 0.5 neg (the tied positive drops 1e-5 below it), 0.5 pos; the difficult 0.95 is ignored
    ap = krahenbuhl_ap(np.array([0.9, 0.5, 0.5, 0.95]), np.array([1, 1, -1, 0]))
    assert ap == pytest.approx((1 / 1 + 2 / 3) / 2)


# ---- Fast R-CNN proposals and test-time selection ----------------------------------------------------------------

def _write_mat(path: Path, boxes: list, names: list | None):
    from scipy.io import savemat
    cells = np.empty((1, len(boxes)), dtype=object)
    for i, b in enumerate(boxes):
        cells[0, i] = np.asarray(b, dtype=np.float64)
    data = {"boxes": cells}
    if names is not None:
        ids = np.empty((1, len(names)), dtype=object)
        for i, n in enumerate(names):
            ids[0, i] = n
        data["images"] = ids
    savemat(path, data)


def test_read_proposals_published_layout(tmp_path):
    from bench.protocols._voc_transfer_det import read_proposals
    path = tmp_path / "voc_2007_test.mat"
    # 1-based inclusive [y1 x1 y2 x2], as fast-rcnn's selective_search_data
    _write_mat(path, [[[11, 21, 40, 60], [1, 1, 5, 7]], [[3, 4, 10, 12]]], ["000001", "000002"])
    boxes = read_proposals(path, ["000001", "000002"])
    # fast-rcnn reads [:, (1, 0, 3, 2)] - 1 (0-based inclusive x1 y1 x2 y2); bench's continuous boxes add 1 to x2/y2
    np.testing.assert_array_equal(boxes[0], [[20, 10, 60, 40], [0, 0, 7, 5]])
    np.testing.assert_array_equal(boxes[1], [[3, 2, 12, 10]])
    _write_mat(path, [[[1, 1, 2, 2]]], None)                     # no `images`: the order is trusted, as fast-rcnn
    assert len(read_proposals(path, ["x"])) == 1
    with pytest.raises(DataError, match="image set has 2"):
        read_proposals(path, ["x", "y"])
    _write_mat(path, [[[1, 1, 2, 2]], [[1, 1, 2, 2]]], ["a", "c"])
    with pytest.raises(DataError, match="'c' in the proposal file, 'b' in the image set"):
        read_proposals(path, ["a", "b"])
    with pytest.raises(DataError, match="fetch_selective_search_data"):
        read_proposals(tmp_path / "missing.mat", ["a"])
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="not a readable MATLAB proposal file"):
        read_proposals(tmp_path / "bad.mat", ["a"])


def test_fast_rcnn_selection_top_per_image_then_per_set_then_nms():
    from types import SimpleNamespace
    from bench.protocols._voc_transfer_det import _fast_rcnn_detections
    p = SimpleNamespace(max_per_image=2, nms=0.3)
    box = np.array([0, 0, 10, 10], dtype=np.float64)
    far = np.array([50, 50, 60, 60], dtype=np.float64)
    # image a: class 1 has scores .9 (box), .8 (same box: NMS drops it), .7 (far: beyond top-2 per image)
    sa = np.zeros((3, 3)); sa[:, 1] = [0.9, 0.8, 0.7]
    ba = np.zeros((3, 3, 4)); ba[:, 1] = [box, box, far]
    # image b: class 2 scores .6 and .5 on far-apart boxes
    sb = np.zeros((2, 3)); sb[:, 2] = [0.6, 0.5]
    bb = np.zeros((2, 3, 4)); bb[:, 2] = [box, far]
    out = _fast_rcnn_detections([("a", sa, ba), ("b", sb, bb)], p)
    # max_per_set = 40 · 2 images is never reached, so only top-2 per image and NMS 0.3 select
    a = {(int(lbl), round(float(s), 2)) for lbl, s in zip(out[0]["labels"], out[0]["scores"]) if s > 0}
    b = {(int(lbl), round(float(s), 2)) for lbl, s in zip(out[1]["labels"], out[1]["scores"]) if s > 0}
    assert a == {(1, 0.9)}
    assert b == {(2, 0.6), (2, 0.5)}


# ---- networks ----------------------------------------------------------------------------------------------------

def test_trunks_of_alexnet_vgg_and_deepcluster():
    import torchvision
    from bench.backbones._deepcluster import build_deepcluster
    from bench.protocols._voc_transfer_nets import ConvTrunk, head_grid
    alex = torchvision.models.alexnet()
    assert head_grid(alex) == 6 and head_grid(build_deepcluster("deepcluster_alexnet")) == 6
    assert head_grid(build_deepcluster("deepcluster_vgg16", sobel=False)) == 7
    t = ConvTrunk(alex, drop_last_pool=True)          # conv5 without pool5: Fast R-CNN's stride-16 map
    assert t.out_channels == 256 and 2 ** round(np.log2(t.stride)) == 16
    dc = ConvTrunk(build_deepcluster("deepcluster_alexnet"))
    assert dc.out_channels == 256 and dc(torch.zeros(1, 3, 224, 224)).shape[-1] == 6   # pool5 6 × 6 at 224


def test_fc6_8_freezes_the_trunk_but_trains_bn_scales_when_asked():
    import timm
    from bench.protocols._voc_transfer_nets import ConvTrunk, freeze_trunk
    trunk = ConvTrunk(timm.create_model("resnet18", num_classes=0))
    freeze_trunk(trunk, "fc6-8", train_batchnorm=True)
    trainable = {n for n, q in trunk.named_parameters() if q.requires_grad}
    assert trainable and all(".bn" in n or "bn1" in n or "downsample.1" in n for n in trainable)
    trunk2 = ConvTrunk(timm.create_model("resnet18", num_classes=0))
    assert freeze_trunk(trunk2, "fc6-8", train_batchnorm=False)["trunk_trainable_params"] == 0


# ---- miniature ---------------------------------------------------------------------------------------------------

def test_voc_miniature_has_segmentation_and_proposals(mini_root):
    from PIL import Image
    from bench.data.voc import VOCDetectionBoxes
    from bench.protocols._voc_transfer_det import read_proposals
    voc12 = mini_root / "VOCdevkit" / "VOC2012"
    train = (voc12 / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val = (voc12 / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert len(train) == 40 and len(val) == 20 and not set(train) & set(val)
    seen = set()
    for name in train + val:
        with Image.open(voc12 / "SegmentationClass" / f"{name}.png") as m:
            assert m.mode == "P"
            seen |= set(np.unique(np.array(m)).tolist())
    assert seen == {0, 5, 16, 20, 255}           # background, bottle, pottedplant, tvmonitor, void
    for image_set in ("trainval", "test"):
        ds = VOCDetectionBoxes(mini_root / "VOCdevkit", "2007", image_set)
        ids = [ds.image_id(i).split("/")[1] for i in range(len(ds))]
        props = read_proposals(mini_root / "VOCdevkit" / "selective_search_data" / f"voc_2007_{image_set}.mat", ids)
        from torchvision.ops import box_iou
        best = [box_iou(torch.as_tensor(props[i]), torch.as_tensor(ds.target(i)["boxes"])).max(0).values.min()
                for i in range(len(ds)) if len(ds.target(i)["boxes"])]
        assert min(best) > 0.5                    # every object has a proposal that Fast R-CNN calls foreground


# ---- mapping -----------------------------------------------------------------------------------------------------

def test_reference_tables_map_to_voc_transfer_with_their_presets():
    from bench.presets import preset_version
    from bench.reference import documented_entries
    docs = [d for d in documented_entries() if d.table in ("deepcluster_voc_transfer", "jigsawpp_voc_transfer",
                                                           "deepcluster_voc07_detection")]
    assert docs and {d.protocol for d in docs} == {"voc_transfer"}
    for d in docs:
        preset_version("voc_transfer", d.preset)          # every mapped preset exists
    jig = {(d.method, d.metric): d.value for d in docs if d.table == "jigsawpp_voc_transfer"
           and d.preset == "jigsawpp-detection"}
    assert jig[("Jigsaw++", "mAP")] == "55.5" and jig[("Jigsaw++", "mAP_ms")] == "55.7"
    vgg = {d.preset for d in docs if d.table == "deepcluster_voc07_detection" and d.arch == "VGG-16"}
    assert vgg == {"deepcluster-detection-all-vgg16"}
    seg = {d.dataset for d in docs if d.metric == "mIoU"}
    assert seg == {"voc2012"}
    # MoCo's VOC detection stays on the Faster R-CNN protocol
    assert {d.protocol for d in documented_entries() if d.table == "moco_voc_detection"} == {"detection"}


# ---- command line ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def voc_results(tmp_path_factory, mini_root):
    out = tmp_path_factory.mktemp("voc_transfer")
    common = ["--quick", "--model", "resnet18", "--data-root", mini_root, "--out", out, "--seed", "0", "-q"]
    assert run_cli("run", "--protocol", "voc_transfer", "--set", "quick_iterations=3", *common) == 0
    assert run_cli("run", "--protocol", "voc_transfer", "--preset", "jigsawpp-detection", "--resolution", "32",
                   "--set", "quick_iterations=2", "--set", "ms_test_scales=[480,688]", *common) == 0
    assert run_cli("run", "--protocol", "voc_transfer", "--preset", "deepcluster-segmentation-all",
                   "--set", "quick_iterations=2", "--set", "batch_size=2", *common) == 0
    return out


def test_cli_runs_each_task_and_its_row_reaches_the_table(voc_results):
    records = [json.loads(p.read_text()) for p in sorted((voc_results / "runs").glob("*.json"))]
    by_task = {r["details"]["task"]: r for r in records}
    assert set(by_task) == {"classification", "detection", "segmentation"}
    assert set(by_task["classification"]["metrics"]) == {"mAP", "mAP_11pt"}
    assert set(by_task["detection"]["metrics"]) == {"mAP", "mAP_ms"}
    assert set(by_task["segmentation"]["metrics"]) == {"mIoU"}
    assert by_task["detection"]["details"]["proposals"]["test"].endswith("selective_search_data/voc_2007_test.mat")
    assert run_cli("table", "--results", voc_results) == 0
    t07 = (voc_results / "voc_transfer__voc2007.md").read_text()
    t12 = (voc_results / "voc_transfer__voc2012.md").read_text()
    measured07 = [line for line in t07.splitlines() if line.startswith("| measured")]
    assert {p for line in measured07 for p in ("deepcluster-classification-fc6-8", "jigsawpp-detection")
            if f"| {p} |" in line} == {"deepcluster-classification-fc6-8", "jigsawpp-detection"}
    assert any(line.startswith("| measured") and "deepcluster-segmentation-all" in line for line in t12.splitlines())
    assert "| jigsawpp_voc_transfer | Jigsaw++ |" in t07 and "| deepcluster_voc_transfer | DeepCluster |" in t12


def test_missing_segmentation_list_is_one_line_error(tmp_path):
    from bench.protocols._voc_transfer_seg import VOCSegmentationClass
    with pytest.raises(DataError, match="ImageSets/Segmentation/train.txt: VOC segmentation list not found"):
        VOCSegmentationClass(tmp_path / "VOC2012", "train")


def test_opencv_proposals_without_opencv_contrib_is_one_line_error(monkeypatch):
    import sys
    from PIL import Image
    from bench.errors import BenchError
    from bench.protocols._voc_transfer_det import selective_search
    monkeypatch.setitem(sys.modules, "cv2", None)      # import cv2 → ImportError, as on a machine without it
    with pytest.raises(BenchError, match="proposals=opencv needs opencv-contrib"):
        selective_search(Image.new("RGB", (8, 8)))
