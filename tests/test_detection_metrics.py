"""VOC AP against a transcription of detectron2's voc_eval/voc_ap (with its text round-trip), of the devkit's
recall grid, hand-built cases, and pycocotools."""
import numpy as np
import pytest

from bench.metrics.detection import (RECALL_GRIDS, VOC_IOU_THRESHOLDS, ClassDetections, ClassGroundTruth, voc_ap,
                                     voc_class_ap, voc_detection_metrics)
from bench.protocols._detection_evaluate import _class_detections


def matlab_colon(a, d, b):
    """MATLAB's a:d:b for a < b, d > 0, as MathWorks' colonop.m describes the built-in: n = round((b-a)/d) (less
    one if a+n·d overshoots b by more than tol), the right end c = b when a+n·d is within tol of it, then the
    first half a + k·d, the second half c − k·d, and the midpoint (a+c)/2 when n is even."""
    tol = 2.0 * np.finfo(float).eps * max(abs(a), abs(b))
    n = round((b - a) / d)
    if a + n * d - b > tol:
        n -= 1
    c = b if a + n * d - b > -tol else a + n * d
    v = [0.0] * (n + 1)
    for k in range(n // 2 + 1):
        v[k] = a + k * d
        v[n - k] = c - k * d
    if n % 2 == 0:
        v[n // 2] = (a + c) / 2
    return v


DEVKIT_GRID = matlab_colon(0.0, 0.1, 1.0)          # VOCevaldet.m / VOCevalcls.m: for t=0:0.1:1
D2_GRID = list(np.arange(0.0, 1.1, 0.1))           # detectron2's voc_ap


def test_recall_grids_are_matlabs_and_numpys_floats():
    assert list(RECALL_GRIDS["devkit"]) == DEVKIT_GRID and list(RECALL_GRIDS["numpy"]) == D2_GRID
    assert DEVKIT_GRID[6:8] == [0.6, 0.7] and D2_GRID[6:8] == [0.6000000000000001, 0.7000000000000001]
    assert DEVKIT_GRID[3] == D2_GRID[3] == 0.30000000000000004 > 3 / 10   # 0.3 is 3·0.1 in MATLAB too
    assert list(np.linspace(0, 1, 11)) == D2_GRID                        # ssl-transfer's grid


# --- transcribed from facebookresearch/detectron2:detectron2/evaluation/pascal_voc_evaluation.py -----------------
def ref_voc_ap(rec, prec, use_07_metric=False, grid=None):
    if use_07_metric:
        ap = 0.0
        for t in (np.arange(0.0, 1.1, 0.1) if grid is None else grid):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def ref_voc_eval(recs, image_ids, confidence, BB, ovthresh=0.5, use_07_metric=False, grid=None):
    """voc_eval with the file reading replaced by arguments: recs = {image: [{'bbox', 'difficult'}]} of one class."""
    class_recs = {}
    npos = 0
    for imagename, R in recs.items():
        bbox = np.array([x["bbox"] for x in R])
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}
    confidence = np.asarray(confidence, dtype=float)
    BB = np.asarray(BB, dtype=float).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence)
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return ref_voc_ap(rec, prec, use_07_metric, grid)


def ref_process_lines(outputs):
    """PascalVOCDetectionEvaluator.process(): outputs = [(image_id, boxes float32 (N,4), scores float32, classes)]
    in inference order → per class the text lines it writes."""
    lines = {}
    for image_id, boxes, scores, classes in outputs:
        for box, score, cls in zip(boxes, scores.tolist(), classes.tolist()):
            xmin, ymin, xmax, ymax = box
            xmin += 1
            ymin += 1
            lines.setdefault(cls, []).append(f"{image_id} {score:.3f} {xmin:.1f} {ymin:.1f} {xmax:.1f} {ymax:.1f}")
    return lines


def ref_read_lines(lines):
    """voc_eval's reading of a detection file written as "\n".join(lines)."""
    text = "\n".join(lines)
    splitlines = [x.strip().split(" ") for x in text.splitlines(keepends=True)]
    image_ids = [x[0] for x in splitlines]
    confidence = np.array([float(x[1]) for x in splitlines])
    BB = np.array([[float(z) for z in x[2:]] for x in splitlines]).reshape(-1, 4)
    return image_ids, confidence, BB


def ref_detectron2_voc(outputs, recs_per_class, n_classes, grid=None):
    """PascalVOCDetectionEvaluator.evaluate(): AP, AP50, AP75 (percent) from the text round-trip."""
    lines = ref_process_lines(outputs)
    aps = {t: [] for t in range(50, 100, 5)}
    for cls in range(n_classes):
        ids, conf, BB = ref_read_lines(lines.get(cls, [""]))
        for t in range(50, 100, 5):
            with np.errstate(invalid="ignore", divide="ignore"):
                aps[t].append(ref_voc_eval(recs_per_class[cls], ids, conf, BB, t / 100.0, True, grid) * 100)
    mAP = {t: np.mean(x) for t, x in aps.items()}
    return {"AP": np.mean(list(mAP.values())), "AP50": mAP[50], "AP75": mAP[75]}
# ------------------------------------------------------------------------------------------------------------------


def _gt(recs):
    return ClassGroundTruth(boxes={k: np.array([o["bbox"] for o in v], dtype=float).reshape(-1, 4) for k, v in recs.items()},
                            difficult={k: np.array([o["difficult"] for o in v], dtype=bool) for k, v in recs.items()})


def _dets(ids, scores, boxes):
    return ClassDetections(np.array(ids, dtype=object), np.array(scores, float), np.array(boxes, float).reshape(-1, 4))


def _both(recs, ids, scores, boxes, thr=0.5, use_07=True):
    ours = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), (thr,), use_07_metric=use_07, grid="numpy")[0]
    return ours, ref_voc_eval(recs, ids, scores, boxes, thr, use_07)


def _obj(x1, y1, x2, y2, difficult=0):
    return {"bbox": [x1, y1, x2, y2], "difficult": difficult}


def test_hits_and_a_miss_by_hand():
    # 3 boxes, 2 found by the two best detections, one FP ranked last: rec .33 .67 .67, prec 1 1 .67.
    # 11-point: recall points 0…0.6 → precision 1 (7 points), 0.7…1.0 → 0: AP = 7/11.
    recs = {"a": [_obj(0, 0, 9, 9), _obj(20, 20, 29, 29)], "b": [_obj(0, 0, 19, 19)]}
    ours, ref = _both(recs, ["a", "b", "a"], [0.9, 0.8, 0.7], [[0, 0, 9, 9], [0, 0, 19, 19], [50, 50, 60, 60]])
    assert ours == pytest.approx(7 / 11) and ref == pytest.approx(7 / 11)
    # area: 2/3 of recall at precision 1 → 2/3
    assert _both(recs, ["a", "b", "a"], [0.9, 0.8, 0.7], [[0, 0, 9, 9], [0, 0, 19, 19], [50, 50, 60, 60]],
                 use_07=False)[0] == pytest.approx(2 / 3)


def test_duplicate_detection_is_a_false_positive():
    recs = {"a": [_obj(0, 0, 9, 9)]}
    # the duplicate scores higher than nothing else; the first claims the box, the second is FP: prec 1, .5
    ours, ref = _both(recs, ["a", "a"], [0.9, 0.8], [[0, 0, 9, 9], [1, 1, 9, 9]])
    assert ours == pytest.approx(ref) and ours == pytest.approx(1.0)           # recall 1 reached at precision 1 first
    ours, ref = _both(recs, ["a", "a"], [0.8, 0.9], [[0, 0, 9, 9], [30, 30, 40, 40]])
    assert ours == pytest.approx(ref) and ours == pytest.approx(0.5)           # FP first: recall 1 only at precision 1/2


def test_duplicate_whose_best_box_is_taken_is_fp_even_if_another_box_overlaps():
    # voc_eval takes the argmax over all boxes; it never falls back to the second-best free box (COCO would).
    recs = {"a": [_obj(0, 0, 9, 9), _obj(2, 0, 11, 9)]}
    ours, ref = _both(recs, ["a", "a"], [0.9, 0.8], [[0, 0, 9, 9], [0, 0, 10, 9]])
    assert ours == pytest.approx(ref) and ours == pytest.approx(6 / 11)   # rec .5 at prec 1, never 1


def test_difficult_objects_are_neither_tp_nor_fp():
    recs = {"a": [_obj(0, 0, 9, 9), _obj(20, 20, 29, 29, difficult=1)]}
    ours, ref = _both(recs, ["a", "a", "a"], [0.95, 0.9, 0.8], [[20, 20, 29, 29], [20, 20, 29, 29], [0, 0, 9, 9]])
    assert ours == pytest.approx(ref) and ours == pytest.approx(1.0)   # both hits on the difficult box ignored; npos = 1
    # a detection below the IoU threshold of a difficult box is still a false positive
    ours, ref = _both(recs, ["a", "a"], [0.95, 0.8], [[20, 20, 60, 60], [0, 0, 9, 9]])
    assert ours == pytest.approx(ref) and ours == pytest.approx(0.5)


def test_class_whose_only_ground_truth_is_difficult_counts_zero_as_in_detectron2():
    # cat: two boxes, the best detection finds one, then nothing: recall .5 at precision 1 → points 0 … .5 = 6/11.
    # cow: its only box is difficult; a detection on it is ignored. detectron2: npos = 0, recall 0/0 = NaN, no
    # recall ≥ t, AP 0, and the mean keeps it: AP50 = (6/11 + 0)/2 = 3/11 (leaving cow out would give 6/11).
    # dog: no detection at all → 0.
    cat = {"a": [_obj(1, 1, 10, 10), _obj(21, 21, 30, 30)], "b": []}
    cow = {"a": [], "b": [_obj(1, 1, 10, 10, difficult=1)]}
    gts = {"cat": _gt(cat), "cow": _gt(cow)}
    dets = {"cat": _dets(["a"], [0.9], [[1, 1, 10, 10]]), "cow": _dets(["b"], [0.8], [[1, 1, 10, 10]])}
    metrics, details = voc_detection_metrics(dets, gts)
    assert metrics["AP50"] == pytest.approx(100 * 3 / 11) and metrics["AP75"] == pytest.approx(100 * 3 / 11)
    with np.errstate(invalid="ignore", divide="ignore"):
        assert ref_voc_eval(cow, ["b"], [0.8], [[1, 1, 10, 10]], 0.5, True) == 0.0
    assert details["classes_only_difficult"] == ["cow"] and details["per_class_AP"]["cow"]["AP50"] == 0.0
    assert metrics["AP50_area"] == pytest.approx(50.0)        # area: cow has no defined AP, left out
    gts["dog"] = _gt({"a": [_obj(1, 1, 10, 10)], "b": []})
    assert voc_detection_metrics(dets, gts)[0]["AP50"] == pytest.approx(100 * (6 / 11) / 3)
    # a class with no box at all (a subset of the test set) is left out, unlike detectron2 (documented deviation)
    gts["cow"] = _gt({"a": [], "b": []})
    metrics, details = voc_detection_metrics(dets, gts)
    assert metrics["AP50"] == pytest.approx(100 * (6 / 11) / 2) and details["classes_without_ground_truth"] == ["cow"]


def test_recall_of_exactly_point_six_counts_on_the_devkit_grid_only():
    # 5 boxes (one per image), detections ranked TP TP TP FP TP TP: recall .2 .4 .6 .6 .8 1, precision
    # 1 1 1 3/4 4/5 5/6. Devkit (0.6 and 0.7 exact): t = 0 … .6 → 1 (7 points), t = .7 … 1 → 5/6 (4 points).
    # detectron2's 0.6000000000000001 misses recall 3/5 = 0.6: 6 points of 1 and 5 of 5/6.
    recs = {str(i): [_obj(1, 1, 10, 10)] for i in range(5)}
    ids = ["0", "1", "2", "0", "3", "4"]
    boxes = [[1, 1, 10, 10]] * 3 + [[40, 40, 50, 50]] + [[1, 1, 10, 10]] * 2
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    devkit = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), (0.5,), grid="devkit")[0]
    numpy_ = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), (0.5,), grid="numpy")[0]
    assert devkit == pytest.approx((7 + 4 * 5 / 6) / 11, abs=1e-12)      # 0.9394
    assert numpy_ == pytest.approx((6 + 5 * 5 / 6) / 11, abs=1e-12)      # 0.9242
    assert ref_voc_eval(recs, ids, scores, boxes, 0.5, True, DEVKIT_GRID) == pytest.approx(devkit, abs=1e-12)
    assert ref_voc_eval(recs, ids, scores, boxes, 0.5, True) == pytest.approx(numpy_, abs=1e-12)


def _prediction(image_id, boxes, scores, labels):
    return {"image_id": image_id, "boxes": np.array(boxes, np.float32).reshape(-1, 4),
            "scores": np.array(scores, np.float32), "labels": np.array(labels, np.int64)}


def test_text_round_trip_decides_a_box_at_the_iou_threshold():
    # GT (XML) 1..10 × 1..10: 10 × 10 pixels with the +1 rule. The model's box (0-based) ends at x = 5.04:
    # written "5.0", so IoU = 5·10 / 100 = 0.500, not > 0.5 → a false positive, AP50 0 (at full precision
    # 5.04·10 / 100 = 0.504 would be a hit, AP50 100). Score 0.9996 is read back as 1.0.
    gts = {"cat": _gt({"a": [_obj(1, 1, 10, 10)]})}
    pred = [_prediction("a", [[0.0, 0.0, 5.04, 10.0]], [0.9996], [1])]
    dets = _class_detections(pred, ("cat",))
    np.testing.assert_array_equal(dets["cat"].boxes, [[1.0, 1.0, 5.0, 10.0]])
    assert dets["cat"].scores.tolist() == [1.0]
    assert voc_detection_metrics(dets, gts)[0]["AP50"] == 0.0
    full = ClassDetections(np.array(["a"], object), np.array([0.9996]), np.array([[1.0, 1.0, 5.04, 10.0]]))
    assert voc_detection_metrics({"cat": full}, gts)[0]["AP50"] == pytest.approx(100.0)
    outputs = [("a", p["boxes"], p["scores"], p["labels"] - 1) for p in pred]
    assert ref_detectron2_voc(outputs, [{"a": [_obj(1, 1, 10, 10)]}], 1)["AP50"] == 0.0


def test_text_round_trip_ties_scores_and_the_tie_keeps_file_order():
    # A false positive scored 0.9991 precedes (in inference order) a hit scored 0.9994. At full precision the hit
    # ranks first: AP 1. Both are written "0.999"; voc_eval's argsort keeps a tie of two in file order (checked
    # below), so the FP ranks first: recall 1 first reached at precision 1/2 → AP50 = 11 · (1/2) / 11 = 50.
    assert np.argsort(-np.array([0.999, 0.999])).tolist() == [0, 1]
    gts = {"cat": _gt({"a": [_obj(1, 1, 10, 10)], "b": []})}
    pred = [_prediction("a", [[30, 30, 40, 40], [0, 0, 10, 10]], [0.9991, 0.9994], [1, 1])]
    assert voc_detection_metrics(_class_detections(pred, ("cat",)), gts)[0]["AP50"] == pytest.approx(50.0)
    outputs = [("a", p["boxes"], p["scores"], p["labels"] - 1) for p in pred]
    assert ref_detectron2_voc(outputs, [{"a": [_obj(1, 1, 10, 10)], "b": []}], 1)["AP50"] == pytest.approx(50.0)
    full = ClassDetections(np.array(["a", "a"], object), np.array([0.9991, 0.9994]),
                           np.array([[31, 31, 40, 40], [1, 1, 10, 10]], float))
    assert voc_detection_metrics({"cat": full}, gts)[0]["AP50"] == pytest.approx(100.0)


def test_recall_of_exactly_point_three_misses_the_references_float_grid():
    # 10 boxes, 3 found then only FPs: recall tops out at exactly 0.3 < np.arange(0, 1.1, .1)[3] = 0.30000000000000004
    recs = {str(i): [_obj(0, 0, 9, 9)] for i in range(10)}
    ids = ["0", "1", "2"] + [str(i) for i in range(10)]
    boxes = [[0, 0, 9, 9]] * 3 + [[40, 40, 50, 50]] * 10
    scores = np.linspace(1, 0.1, 13)
    ours, ref = _both(recs, ids, scores, boxes)
    assert ours == pytest.approx(ref) and ours == pytest.approx(3 / 11)
    # MATLAB's 0:0.1:1 has the same 0.30000000000000004: the devkit misses it too
    assert voc_class_ap(_dets(ids, scores, boxes), _gt(recs), (0.5,), grid="devkit")[0] == pytest.approx(3 / 11)


def _random_case(rng, n_images=12, n_classes_boxes=4, difficult_rate=0.2, fp_rate=0.4):
    """Non-overlapping GT on a grid, jittered detections (some duplicated), random FPs, random difficult flags."""
    recs, ids, scores, boxes = {}, [], [], []
    for i in range(n_images):
        objs = []
        for k in rng.permutation(16)[:rng.integers(0, n_classes_boxes + 1)]:
            x, y = 40 * (k % 4) + rng.uniform(0, 8), 40 * (k // 4) + rng.uniform(0, 8)
            objs.append(_obj(x, y, x + rng.uniform(12, 28), y + rng.uniform(12, 28), int(rng.random() < difficult_rate)))
            for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections per box (duplicates)
                if rng.random() < 0.8:
                    ids.append(str(i))
                    scores.append(rng.random())
                    boxes.append(np.array(objs[-1]["bbox"]) + rng.normal(0, 2.5, 4))
        recs[str(i)] = objs
        while rng.random() < fp_rate:
            ids.append(str(i))
            scores.append(rng.random())
            x, y = rng.uniform(0, 150, 2)
            boxes.append([x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 30)])
    return recs, ids, np.array(scores), np.array(boxes).reshape(-1, 4)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_07", [True, False])
def test_matches_transcribed_voc_eval_at_every_threshold(seed, use_07):
    recs, ids, scores, boxes = _random_case(np.random.default_rng(seed))
    ours = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), VOC_IOU_THRESHOLDS, use_07_metric=use_07, grid="numpy")
    ref = [ref_voc_eval(recs, ids, scores, boxes, t, use_07) for t in VOC_IOU_THRESHOLDS]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert 0.05 < ours[0] < 0.95 and ours[-1] < ours[0]   # neither trivial nor degenerate


def test_voc_ap_against_reference_on_random_curves():
    rng = np.random.default_rng(3)
    for _ in range(50):
        hits = rng.random(30) < 0.5
        tp, fp = np.cumsum(hits), np.cumsum(~hits)
        rec, prec = tp / 20.0, tp / (tp + fp)
        for use_07 in (True, False):
            assert voc_ap(rec, prec, use_07, "numpy") == pytest.approx(ref_voc_ap(rec, prec, use_07), abs=1e-12)
        assert voc_ap(rec, prec, True, "devkit") == pytest.approx(ref_voc_ap(rec, prec, True, DEVKIT_GRID), abs=1e-12)


def _coco_per_class_ap(recs, ids, scores, boxes, thresholds, rec_thrs):
    """pycocotools COCOeval, one class, with the given recall thresholds; difficult boxes as iscrowd."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images = sorted(recs)
    img_id = {name: i + 1 for i, name in enumerate(images)}
    anns = [{"id": n + 1, "image_id": img_id[name], "category_id": 1, "iscrowd": o["difficult"],
             "bbox": [o["bbox"][0], o["bbox"][1], o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]],
             "area": (o["bbox"][2] - o["bbox"][0]) * (o["bbox"][3] - o["bbox"][1])}
            for n, (name, o) in enumerate((name, o) for name in images for o in recs[name])]
    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in img_id.values()], "annotations": anns,
                  "categories": [{"id": 1, "name": "x"}]}
    gt.createIndex()
    dt = gt.loadRes([{"image_id": img_id[i], "category_id": 1, "score": float(s),
                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, s, b in zip(ids, scores, boxes)])
    ev = COCOeval(gt, dt, "bbox")
    ev.params.iouThrs = np.array(thresholds)
    ev.params.recThrs = np.array(rec_thrs)
    ev.params.maxDets = [1000]
    ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
    ev.evaluate()
    ev.accumulate()
    return ev.eval["precision"][:, :, 0, 0, 0].mean(axis=1)   # (T,) mean over recall thresholds


def _coco_safe_case(seed):
    """Where VOC and COCO matching coincide: GT boxes never overlap (so 'best box' and 'best free box' agree) and
    detections on difficult (crowd) boxes are exact copies (so VOC IoU and COCO's crowd IoU both equal 1)."""
    rng = np.random.default_rng(seed)
    recs, ids, scores, boxes = _random_case(rng, difficult_rate=0.0)
    for name, objs in recs.items():
        if objs and rng.random() < 0.3:
            objs.append(_obj(150, 150, 170, 175, difficult=1))
            ids.append(name)
            scores = np.append(scores, rng.random())
            boxes = np.vstack([boxes, [150, 150, 170, 175]])
    return recs, ids, scores, boxes


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_pycocotools_where_definitions_coincide(seed):
    """11-point: COCOeval with recThrs = the reference's grid reads, at each r, the envelope precision at the first
    recall ≥ r — exactly max_{r' ≥ r} p(r'), with 0 where recall never reaches r. Area: the envelope is a step
    function constant on ((k-1)/npos, k/npos], so sampling it at the midpoints (k-½)/npos and averaging gives its
    integral exactly. IoU is continuous here (pycocotools has no "+1"), and no score ties (orders agree)."""
    pytest.importorskip("pycocotools")
    recs, ids, scores, boxes = _coco_safe_case(seed)
    gt, dets = _gt(recs), _dets(ids, scores, boxes)
    thr = VOC_IOU_THRESHOLDS
    ours07 = voc_class_ap(dets, gt, thr, use_07_metric=True, pixel_inclusive=False, grid="numpy")
    coco07 = _coco_per_class_ap(recs, ids, scores, boxes, thr, np.arange(0.0, 1.1, 0.1))
    np.testing.assert_allclose(ours07, coco07, atol=1e-9)
    ours_area = voc_class_ap(dets, gt, thr, use_07_metric=False, pixel_inclusive=False)
    mids = (np.arange(gt.npos) + 0.5) / gt.npos
    np.testing.assert_allclose(ours_area, _coco_per_class_ap(recs, ids, scores, boxes, thr, mids), atol=1e-9)
    assert ours07[0] > 0.1 and not np.allclose(ours07, ours_area)


def _random_outputs(rng):
    """Model outputs (float32, 0-based) over a few images and classes, and the XML ground truth. Scores sit within
    ±0.0004 of a few values, so %.3f makes ties the floats did not have; boxes are jittered by a fraction of a
    pixel around small objects, so %.1f moves IoUs across thresholds; some objects are difficult."""
    n_img, n_cls = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    centres = rng.integers(100, 1000, size=int(rng.integers(1, 5))) / 1000
    recs = [{} for _ in range(n_cls)]
    outputs, predictions = [], []
    for i in range(n_img):
        image_id = f"{i:06d}"
        boxes, scores, classes = [], [], []
        for c in range(n_cls):
            objs = []
            for _ in range(int(rng.integers(0, 4))):
                x, y = (int(v) for v in rng.integers(1, 80, 2))
                w, h = (int(v) for v in rng.integers(4, 30, 2))
                objs.append(_obj(x, y, x + w, y + h, int(rng.random() < 0.2)))
                for _ in range(int(rng.integers(0, 3))):
                    boxes.append(np.array([x - 1, y - 1, x + w, y + h]) + rng.normal(0, 0.6, 4))
                    scores.append(rng.choice(centres) + rng.uniform(-4e-4, 4e-4))
                    classes.append(c)
            recs[c][image_id] = objs
            for _ in range(int(rng.integers(0, 3))):       # false positives anywhere
                x, y = rng.uniform(0, 90, 2)
                boxes.append([x, y, x + rng.uniform(3, 30), y + rng.uniform(3, 30)])
                scores.append(rng.choice(centres) + rng.uniform(-4e-4, 4e-4))
                classes.append(c)
        order = rng.permutation(len(scores))
        b = np.array(boxes, np.float32).reshape(-1, 4)[order]
        s = np.array(scores, np.float32)[order]
        k = np.array(classes, np.int64)[order]
        outputs.append((image_id, b, s, k))
        predictions.append({"image_id": image_id, "boxes": b, "scores": s, "labels": k + 1})
    for c in range(n_cls):       # every class has a box (bench leaves out a class with none; see above)
        if not any(recs[c].values()):
            recs[c]["000000"].append(_obj(5, 5, 20, 20, int(rng.random() < 0.5)))
    return outputs, predictions, recs, n_cls


def test_randomized_text_round_trip_against_detectron2_transcription():
    """240 random test sets: bench's detections (round-tripped) and metrics equal detectron2's evaluator written
    out above (process → text → voc_eval at 10 IoUs → means), on detectron2's grid and on the devkit's."""
    rng = np.random.default_rng(16)
    rounding_ties = moved = grids_differ = 0
    for case in range(240):
        outputs, predictions, recs, n_cls = _random_outputs(rng)
        names = tuple(f"c{c}" for c in range(n_cls))
        gts = {names[c]: _gt(recs[c]) for c in range(n_cls)}
        dets = _class_detections(predictions, names)
        results = []
        for grid, ref_grid in (("numpy", None), ("devkit", DEVKIT_GRID)):
            ours = voc_detection_metrics(dets, gts, grid=grid)[0]
            ref = ref_detectron2_voc(outputs, recs, n_cls, ref_grid)
            for key in ("AP", "AP50", "AP75"):
                assert ours[key] == pytest.approx(ref[key], abs=1e-9), (case, grid, key)
            results.append(ours["AP"])
        grids_differ += abs(results[0] - results[1]) > 1e-9
        raw = np.concatenate([o[2] for o in outputs])
        rounding_ties += len(np.unique(np.round(raw.astype(float), 3))) < len(np.unique(raw))
        full = {names[c]: ClassDetections(  # the model's floats, no text: what bench used to score
            np.array([o[0] for o in outputs for k in o[3] if k == c], object),
            np.concatenate([o[2][o[3] == c] for o in outputs]).astype(float),
            np.concatenate([o[1][o[3] == c] for o in outputs]).astype(float) + [1, 1, 0, 0]) for c in range(n_cls)}
        moved += voc_detection_metrics(full, gts, grid="numpy")[0]["AP"] != pytest.approx(
            voc_detection_metrics(dets, gts, grid="numpy")[0]["AP"], abs=1e-9)
    assert rounding_ties > 150 and moved > 100 and grids_differ > 5   # each rule was exercised and mattered
