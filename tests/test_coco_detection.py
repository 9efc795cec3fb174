"""coco_detection: COCO AP by hand and against pycocotools called directly, the COCO reader and miniature, and
Mask R-CNN over ResNet and pyramid-ViT backbones."""
import contextlib
import re
import io
import json

import numpy as np
import pytest
import torch

from bench import load_backbone
from bench.data.coco import COCOInstances
from bench.metrics.coco import COCO_STATS, coco_ap, coco_results

pytestmark = pytest.mark.usefixtures("one_thread")


def _gt(images, annotations, categories=({"id": 7, "name": "thing"},)):
    from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _square(aid, x, y, s, img=1, cat=7):
    return {"id": aid, "image_id": img, "category_id": cat, "bbox": [x, y, s, s], "area": float(s * s),
            "iscrowd": 0, "segmentation": [[x, y, x + s, y, x + s, y + s, x, y + s]]}


def test_box_ap_worked_by_hand():
    # one 10×10 ground truth (small); the top detection overlaps it with IoU 100/140 = 0.714, the second exactly.
    # IoU .50–.70: the top one is the TP, the exact one a duplicate (FP) after recall 1 → AP 1 at 5 thresholds.
    # IoU .75–.95: the top one is an FP, the exact one the TP → precision 1/2 at recall 1 → AP 0.5 at 5 more.
    # AP = (5·1 + 5·0.5) / 10 = 0.75; AP50 = 1; AP75 = 0.5; all of it small; medium/large have no ground truth.
    gt = _gt([{"id": 1, "width": 50, "height": 50}], [_square(1, 0, 0, 10)])
    dets = coco_results(1, np.array([[0, 0, 10, 14], [0, 0, 10, 10]]), np.array([0.9, 0.8]), np.array([1, 1]), [7])
    metrics, details = coco_ap(gt, dets, "bbox")
    assert metrics == pytest.approx({"AP": 75.0, "AP50": 100.0, "AP75": 50.0, "APs": 75.0})
    assert details["undefined"] == ["APm", "APl"]
    assert dets[0]["bbox"] == [0.0, 0.0, 10.0, 14.0] and dets[0]["category_id"] == 7


def test_mask_ap_worked_by_hand():
    # the mask of the top detection covers the square plus a 10×4 strip (IoU 100/140), the second one exactly.
    gt = _gt([{"id": 1, "width": 50, "height": 50}], [_square(1, 0, 0, 10)])
    masks = np.zeros((2, 50, 50), np.float32)
    masks[0, :14, :10] = 0.9
    masks[1, :10, :10] = 0.6
    masks[1, 10:20, :10] = 0.4     # below the 0.5 threshold: not part of the mask
    dets = coco_results(1, np.array([[0, 0, 30, 30], [0, 0, 30, 30]]), np.array([0.9, 0.8]), np.array([1, 1]), [7],
                        masks)
    metrics, _ = coco_ap(gt, dets, "segm")
    assert metrics == pytest.approx({"AP": 75.0, "AP50": 100.0, "AP75": 50.0, "APs": 75.0})


def test_no_detections_score_zero_where_ground_truth_exists():
    gt = _gt([{"id": 1, "width": 200, "height": 200}], [_square(1, 0, 0, 10), _square(2, 50, 50, 60)])
    metrics, details = coco_ap(gt, [], "bbox")
    assert metrics == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APs": 0.0, "APm": 0.0}
    assert details["undefined"] == ["APl"]


def test_crowd_regions_are_ignored_as_cocoeval_defines():
    # a detection inside a crowd region is neither TP nor FP: AP stays 100 with it
    crowd = {**_square(2, 20, 20, 20), "iscrowd": 1}
    gt = _gt([{"id": 1, "width": 50, "height": 50}], [_square(1, 0, 0, 10), crowd])
    dets = coco_results(1, np.array([[22, 22, 30, 30], [0, 0, 10, 10]]), np.array([0.95, 0.5]), np.array([1, 1]),
                        [7])
    assert coco_ap(gt, dets, "bbox")[0]["AP"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def coco_val(mini_root):
    return COCOInstances(mini_root / "coco", "val2017")


def test_reader_targets_match_the_json(coco_val, mini_root):
    from pycocotools import mask as mask_utils
    raw = json.loads((mini_root / "coco" / "annotations" / "instances_val2017.json").read_text())
    assert coco_val.category_ids == sorted(c["id"] for c in raw["categories"]) == [44, 64, 72]
    kinds = {type(a["segmentation"]).__name__ for a in raw["annotations"] if not a["iscrowd"]}
    assert kinds == {"list", "dict"}                       # polygons and RLE both present
    assert sum(a["iscrowd"] for a in raw["annotations"]) == 1
    n_checked = 0
    for i, img_id in enumerate(coco_val.ids):
        anns = [a for a in raw["annotations"] if a["image_id"] == img_id and not a["iscrowd"]]
        t = coco_val.target(i)
        assert len(t["boxes"]) == len(anns)
        for a, box, label, m in zip(anns, t["boxes"], t["labels"], t["masks"]):
            x, y, w, h = a["bbox"]
            assert box.tolist() == pytest.approx([x, y, x + w, y + h])
            assert coco_val.category_ids[label - 1] == a["category_id"]
            assert m.sum() == a["area"]                    # the decoded mask is the annotated area
            ys, xs = np.nonzero(m)
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == pytest.approx(box.tolist())
            n_checked += 1
    assert n_checked >= 20
    img, _ = coco_val[0]
    info = raw["images"][0]
    assert img.size == (info["width"], info["height"])
    assert mask_utils  # the reader decodes with pycocotools (imported above for the RLE check)


class _Replay(torch.nn.Module):
    """A stand-in detector that returns prepared predictions in call order."""

    def __init__(self, preds):
        super().__init__()
        self.preds = list(preds)

    def forward(self, images):
        return [self.preds.pop(0) for _ in images]


def test_evaluation_path_equals_pycocotools_on_the_same_detections(coco_val):
    """predict_coco + coco_ap vs detections written out here (xyxy → xywh, json category ids, masks thresholded
    and RLE-encoded, segm without boxes as detectron2) and scored by COCOeval directly."""
    from pycocotools import mask as mask_utils
    from pycocotools.cocoeval import COCOeval
    from bench.protocols.coco_detection import evaluate_coco
    rng = np.random.default_rng(0)
    preds, mine = [], []
    for i, img_id in enumerate(coco_val.ids):
        t = coco_val.target(i)
        n = len(t["boxes"])
        boxes = t["boxes"] + rng.normal(0, 2, size=(n, 4)).astype(np.float32)
        labels = np.where(rng.random(n) < 0.8, t["labels"], rng.integers(1, 4, n))
        scores = rng.random(n).astype(np.float32)
        probs = np.clip(t["masks"] * rng.uniform(0.3, 1.0, size=t["masks"].shape), 0, 1).astype(np.float32)
        preds.append({"boxes": torch.as_tensor(boxes), "scores": torch.as_tensor(scores),
                      "labels": torch.as_tensor(labels), "masks": torch.as_tensor(probs)[:, None]})
        for b, s, lab, p in zip(boxes, scores, labels, probs):
            rle = mask_utils.encode(np.asfortranarray((p >= 0.5).astype(np.uint8)))
            mine.append({"image_id": img_id, "category_id": [44, 64, 72][lab - 1], "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    metrics, details = evaluate_coco(_Replay(preds), coco_val, device=torch.device("cpu"))
    for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
        dets = [{k: v for k, v in d.items() if not (iou_type == "segm" and k == "bbox")} for d in mine]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco_val.coco, coco_val.coco.loadRes(dets), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        expected = {f"{prefix}{k}": 100 * s for k, s in zip(COCO_STATS, ev.stats[:6]) if s >= 0}
        assert {k: v for k, v in metrics.items() if k.startswith(prefix) and (prefix or "mask" not in k)} == \
            pytest.approx(expected)
    assert 10 < metrics["AP50"] < 100 and 0 < metrics["mask_AP"] < 100     # a case that can fail both ways
    assert details["n_detections"] == len(mine)


@pytest.mark.parametrize("arch, kwargs", [
    ("resnet18", {}),
    ("pvt_v2_b0", {"depths": (1, 1, 1, 1)}),
    ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 16, "num_heads": (1, 1, 1, 1)}),
])
def test_mask_rcnn_trains_one_step_on_hierarchical_backbones(arch, kwargs, coco_val):
    import timm
    from bench.protocols._coco_detection_model import build_mask_rcnn
    from bench.protocols.coco_detection import CocoDetPreset, CocoSamples, _quick
    torch.manual_seed(0)
    backbone = timm.create_model(arch, pretrained=False, **kwargs)
    preset = _quick(CocoDetPreset(num_classes=3))
    model = build_mask_rcnn(backbone, preset, mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=3)
    x, t = CocoSamples(coco_val, [0, 1])[(1, True)]
    losses = model([x], [t])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    model.eval()
    with torch.no_grad():
        out = model([x[:, :80, :96]])[0]
    assert out["masks"].shape[1:] == (1, 80, 96)


def test_plain_vit_is_refused_with_the_fix():
    import timm
    from bench.errors import BenchError
    from bench.protocols._coco_detection_model import PyramidFPN
    vit = timm.create_model("vit_tiny_patch16_224", depth=1, pretrained=False)
    with pytest.raises(BenchError, match="hierarchical backbone"):
        PyramidFPN(vit)


def test_flip_moves_boxes_and_masks_together(coco_val):
    from bench.protocols.coco_detection import CocoSamples
    s = CocoSamples(coco_val, list(range(len(coco_val))))
    x, t = s[(2, False)]
    xf, tf = s[(2, True)]
    assert torch.equal(xf, x.flip(-1)) and torch.equal(tf["masks"], t["masks"].flip(-1))
    for box, m in zip(tf["boxes"], tf["masks"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1] == \
            pytest.approx(box.tolist())


# --- pyramid ViTs in the segmentation protocol (UM-MAE presets) ------------------------------------------------

class _Backbone:
    def __init__(self, model):
        self.model = model


@pytest.mark.parametrize("arch, kwargs", [
    ("pvt_v2_b0", {"depths": (1, 1, 1, 1)}),
    ("swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 16, "num_heads": (1, 1, 1, 1)}),
])
def test_um_mae_preset_builds_upernet_on_pyramid_vits(arch, kwargs):
    import timm
    from bench.presets import resolve_preset
    from bench.protocols.segmentation import SegPreset, build_seg_model
    preset = resolve_preset("segmentation", SegPreset,
                            "upernet-um-mae-pvt" if "pvt" in arch else "upernet-um-mae-swin")[0]
    assert isinstance(preset, SegPreset) and preset.level_proj == 768 and preset.layer_decay == 1.0
    backbone = _Backbone(timm.create_model(arch, pretrained=False, **kwargs))
    model = build_seg_model(backbone, preset, 64, 16)
    widths = [c.out_channels for c in model.neck.proj]
    stage_widths = [f["num_chs"] for f in backbone.model.feature_info][-4:]
    assert widths == [768] * 4 and [c.in_channels for c in model.neck.proj] == stage_widths
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in backbone.model.modules() if hasattr(b, "drop_path1")]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])      # linear 0 → 0.1 over the 4 blocks
    model.train()
    logits, aux = model(torch.zeros(2, 3, 64, 64))
    assert logits.shape == (2, 150, 16, 16) and aux.shape[1] == 150


def test_level_proj_refuses_a_plain_vit_and_leaves_resnets_alone():
    import timm
    from bench.errors import BenchError
    from bench.protocols.segmentation import SegPreset, build_seg_model
    vit = _Backbone(timm.create_model("vit_tiny_patch16_224", depth=2, img_size=64, pretrained=False))
    with pytest.raises(BenchError, match="level_proj"):
        build_seg_model(vit, SegPreset(level_proj=32, out_indices=(0, 1, 0, 1)), 64, 16)
    resnet = timm.create_model("resnet18", pretrained=False)
    before = [type(m).__name__ for m in resnet.modules()]
    build_seg_model(_Backbone(resnet), SegPreset(drop_path=0.1), 64, 16)
    assert [type(m).__name__ for m in resnet.modules()] == before


def test_bad_annotation_file_is_one_line_naming_it(tmp_path):
    from bench.errors import DataError
    (tmp_path / "annotations").mkdir()
    (tmp_path / "val2017").mkdir()
    bad = tmp_path / "annotations" / "instances_val2017.json"
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match="instances_val2017.json: not a COCO instances json"):
        COCOInstances(tmp_path, "val2017")
    with pytest.raises(DataError, match="instances_train2017.json: COCO annotation file not found"):
        COCOInstances(tmp_path, "train2017")


# --- UM-MAE's released PVT / Swin checkpoints ------------------------------------------------------------------

def _um_mae_pvt(dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), mlp=(8, 8, 4, 4), img=64, pretrain=False):
    """A state dict in the key layout of implus/UM-MAE models_pvt.PVT (fine-tuned; models_mae_pvt with `pretrain`):
    flat `blocks.N`, every stage after the first opened by a 2×2 PatchMerge conv, attention with q / kv and an
    always-present spatial reduction (1×1 conv `sr` + `norm`), a 4×4 patch embedding and a (1, (img/4)², C0)
    pos_embed; fc_norm + head, or norm + MAE decoder when pre-trained."""
    g = torch.Generator().manual_seed(0)

    def t(*shape):
        return torch.randn(*shape, generator=g)

    sd, i = {"patch_embed.proj.weight": t(dims[0], 3, 4, 4), "patch_embed.proj.bias": t(dims[0]),
             "pos_embed": t(1, (img // 4) ** 2, dims[0])}, 0
    for s, (c, d, r) in enumerate(zip(dims, depths, mlp)):
        for j in range(d):
            b = f"blocks.{i}."
            if s and not j:
                sd.update({b + "downsample.proj.weight": t(c, dims[s - 1], 2, 2), b + "downsample.proj.bias": t(c)})
            for name, shape in (("norm1", (c,)), ("attn.q", (c, c)), ("attn.kv", (2 * c, c)), ("attn.proj", (c, c)),
                                ("attn.sr", (c, c, 1, 1)), ("attn.norm", (c,)), ("norm2", (c,)),
                                ("mlp.fc1", (r * c, c)), ("mlp.fc2", (c, r * c))):
                sd[b + name + ".weight"], sd[b + name + ".bias"] = t(*shape), t(shape[0])
            i += 1
    if pretrain:
        sd.update({"norm.weight": t(dims[-1]), "norm.bias": t(dims[-1]), "vis_mask_token": t(1, 1, dims[0]),
                   "mask_token": t(1, 1, 32), "decoder_embed.weight": t(128, dims[-1]),
                   "decoder_pred.weight": t(48, 32)})
    else:
        sd.update({"fc_norm.weight": t(dims[-1]), "fc_norm.bias": t(dims[-1]), "head.weight": t(10, dims[-1])})
    return sd


def _um_mae_swin(dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8)):
    """models_swin.Swin's key layout: a relative-position MLP per attention (posmlp, 2 → 32 → heads 1×1 convs)
    and a PatchMerge of LayerNorm(C_prev) + 2×2 conv opening every stage after the first."""
    sd, i = {"patch_embed.proj.weight": torch.zeros(dim, 3, 4, 4), "patch_embed.proj.bias": torch.zeros(dim),
             "patch_embed.norm.weight": torch.ones(dim), "patch_embed.norm.bias": torch.zeros(dim)}, 0
    for s, (d, h) in enumerate(zip(depths, heads)):
        c = dim * 2 ** s
        for j in range(d):
            b = f"blocks.{i}."
            if s and not j:
                sd.update({b + "downsample.norm.weight": torch.ones(c // 2),
                           b + "downsample.norm.bias": torch.zeros(c // 2),
                           b + "downsample.proj.weight": torch.zeros(c, c // 2, 2, 2),
                           b + "downsample.proj.bias": torch.zeros(c)})
            for name, shape in (("norm1", (c,)), ("attn.posmlp.0", (32, 2, 1, 1)), ("attn.posmlp.2", (h, 32, 1, 1)),
                                ("attn.qkv", (3 * c, c)), ("attn.proj", (c, c)), ("norm2", (c,)),
                                ("mlp.fc1", (4 * c, c)), ("mlp.fc2", (c, 4 * c))):
                sd[b + name + ".weight"], sd[b + name + ".bias"] = torch.zeros(shape), torch.zeros(shape[0])
            i += 1
    return {**sd, "fc_norm.weight": torch.ones(8 * dim), "head.weight": torch.zeros(10, 8 * dim)}


def _timm_name(key: str, kind: str, stage_of: dict[int, tuple[int, int]]) -> str | None:
    """Where a UM-MAE backbone tensor would go in timm's pvt_v2 / swin by name (None: no such place)."""
    if key.startswith("patch_embed."):
        return key
    m = re.match(r"blocks\.(\d+)\.(.*)$", key)
    if not m:
        return None
    s, j = stage_of[int(m.group(1))]
    rest = m.group(2)
    if rest.startswith("downsample."):
        if kind == "swin":
            rest = rest.replace("downsample.proj", "downsample.reduction")
        return f"{'stages' if kind == 'pvt' else 'layers'}.{s}.{rest}"
    if rest.startswith("attn.posmlp"):
        return None
    return f"{'stages' if kind == 'pvt' else 'layers'}.{s}.blocks.{j}.{rest}"


@pytest.mark.parametrize("kind", ["pvt", "pvt-pretrain", "swin"])
def test_um_mae_checkpoints_are_recognised_and_refused_with_the_reason(kind, tmp_path):
    """UM-MAE's PVT / Swin files (fine-tuned and MAE pre-trained) are named for what they are, not 'unknown
    layout', and refused: timm's pvt_v2 / swin hold only part of them by name and shape, and have parts of their own
    that the file cannot fill, so a partial load would evaluate a network UM-MAE never trained."""
    import timm
    from bench.backbones._ssl_layouts import um_mae_kind, um_mae_stages
    from bench.backbones.layouts import detect_layout
    from bench.errors import CheckpointError
    sd = _um_mae_swin() if kind == "swin" else _um_mae_pvt(pretrain=kind == "pvt-pretrain")
    obj = {"model": sd, "epoch": 99}
    base = kind.split("-")[0]
    assert um_mae_kind(obj) == base and detect_layout(obj, "x").name == "um-mae-pyramid"
    assert um_mae_stages(sd) == ([(2, 32), (2, 64), (2, 160), (2, 256)] if base == "pvt"
                                 else [(2, 32), (2, 64), (2, 128), (2, 256)])
    path = tmp_path / "um_mae.pth"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=rf"{path}: UM-MAE's own .*depths \[2, 2, 2, 2\].*no bench backbone"):
        load_backbone(str(path))

    timm_model = timm.create_model("pvt_v2_b0") if base == "pvt" else timm.create_model(
        "swin_tiny_patch4_window7_224", embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
    ref = timm_model.state_dict()
    starts = um_mae_stages(sd)
    stage_of, i = {}, 0
    for s, (d, _) in enumerate(starts):
        for j in range(d):
            stage_of[i], i = (s, j), i + 1
    backbone = {k: v for k, v in sd.items() if not k.startswith(("fc_norm", "head", "norm.", "decoder", "mask_token",
                                                                  "vis_mask_token"))}
    fits = {k for k, v in backbone.items() if (n := _timm_name(k, base, stage_of)) in ref and ref[n].shape == v.shape}
    no_fit = sorted(set(backbone) - fits)
    # what cannot load: the convolutions whose kernels differ, and the parts timm's networks do not have
    if base == "pvt":
        assert {re.sub(r"blocks\.\d+\.", "", k) for k in no_fit} == {
            "patch_embed.proj.weight", "pos_embed", "downsample.proj.weight", "attn.sr.weight", "attn.sr.bias",
            "attn.norm.weight", "attn.norm.bias"}
        assert all(sd[k].shape[-1] == 1 for k in no_fit if k.endswith("attn.sr.weight"))
        assert [k for k in no_fit if "attn.norm" in k] == [f"blocks.{b}.attn.norm.{w}" for b in (6, 7)
                                                           for w in ("bias", "weight")]   # sr_ratio 1: timm has none
    else:
        assert {re.sub(r"blocks\.\d+\.", "", k) for k in no_fit} == {
            "attn.posmlp.0.weight", "attn.posmlp.0.bias", "attn.posmlp.2.weight", "attn.posmlp.2.bias",
            "downsample.norm.weight", "downsample.norm.bias", "downsample.proj.weight", "downsample.proj.bias"}
    unfilled = {re.sub(r"(stages|layers)\.\d+\.(blocks\.\d+\.)?", "", k) for k in set(ref) - {
        _timm_name(k, base, stage_of) for k in fits} if not k.startswith("head")}
    if base == "pvt":   # PVT v2's depth-wise conv in every MLP and its per-stage norms would stay random
        assert {"mlp.dwconv.weight", "norm.weight", "downsample.norm.weight"} <= unfilled
    else:               # Swin's bias tables would stay random
        assert "attn.relative_position_bias_table" in unfilled
    assert len(fits) < len(backbone)
