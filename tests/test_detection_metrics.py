"""VOC AP against a transcription of detectron2's voc_eval/voc_ap, hand-built cases, and pycocotools."""
import numpy as np
import pytest

from bench.metrics.detection import (VOC_IOU_THRESHOLDS, ClassDetections, ClassGroundTruth, voc_ap, voc_class_ap,
                                     voc_detection_metrics)


# --- transcribed from facebookresearch/detectron2:detectron2/evaluation/pascal_voc_evaluation.py -----------------
def ref_voc_ap(rec, prec, use_07_metric=False):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
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


def ref_voc_eval(recs, image_ids, confidence, BB, ovthresh=0.5, use_07_metric=False):
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
    return ref_voc_ap(rec, prec, use_07_metric)
# ------------------------------------------------------------------------------------------------------------------


def _gt(recs):
    return ClassGroundTruth(boxes={k: np.array([o["bbox"] for o in v], dtype=float).reshape(-1, 4) for k, v in recs.items()},
                            difficult={k: np.array([o["difficult"] for o in v], dtype=bool) for k, v in recs.items()})


def _dets(ids, scores, boxes):
    return ClassDetections(np.array(ids, dtype=object), np.array(scores, float), np.array(boxes, float).reshape(-1, 4))


def _both(recs, ids, scores, boxes, thr=0.5, use_07=True):
    ours = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), (thr,), use_07_metric=use_07)[0]
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


def test_class_with_no_detections_scores_zero_and_class_without_gt_is_excluded():
    gts = {"cat": _gt({"a": [_obj(0, 0, 9, 9)], "b": []}), "dog": _gt({"a": [], "b": [_obj(0, 0, 9, 9)]}),
           "cow": _gt({"a": [_obj(0, 0, 9, 9, difficult=1)], "b": []})}
    dets = {"cat": _dets(["a"], [0.5], [[0, 0, 9, 9]])}
    metrics, details = voc_detection_metrics(dets, gts)
    assert ref_voc_eval({"a": [], "b": [_obj(0, 0, 9, 9)]}, [], [], np.zeros((0, 4)), 0.5, True) == 0.0
    assert metrics["AP50"] == pytest.approx(50.0)      # cat 1.0, dog 0.0
    assert metrics["AP"] == pytest.approx(50.0) and metrics["AP75"] == pytest.approx(50.0)
    assert details["classes_without_ground_truth"] == ["cow"]


def test_recall_of_exactly_point_three_misses_the_references_float_grid():
    # 10 boxes, 3 found then only FPs: recall tops out at exactly 0.3 < np.arange(0, 1.1, .1)[3] = 0.30000000000000004
    recs = {str(i): [_obj(0, 0, 9, 9)] for i in range(10)}
    ids = ["0", "1", "2"] + [str(i) for i in range(10)]
    boxes = [[0, 0, 9, 9]] * 3 + [[40, 40, 50, 50]] * 10
    scores = np.linspace(1, 0.1, 13)
    ours, ref = _both(recs, ids, scores, boxes)
    assert ours == pytest.approx(ref) and ours == pytest.approx(3 / 11)


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
    ours = voc_class_ap(_dets(ids, scores, boxes), _gt(recs), VOC_IOU_THRESHOLDS, use_07_metric=use_07)
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
            assert voc_ap(rec, prec, use_07) == pytest.approx(ref_voc_ap(rec, prec, use_07), abs=1e-12)


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
    ours07 = voc_class_ap(dets, gt, thr, use_07_metric=True, pixel_inclusive=False)
    coco07 = _coco_per_class_ap(recs, ids, scores, boxes, thr, np.arange(0.0, 1.1, 0.1))
    np.testing.assert_allclose(ours07, coco07, atol=1e-9)
    ours_area = voc_class_ap(dets, gt, thr, use_07_metric=False, pixel_inclusive=False)
    mids = (np.arange(gt.npos) + 0.5) / gt.npos
    np.testing.assert_allclose(ours_area, _coco_per_class_ap(recs, ids, scores, boxes, thr, mids), atol=1e-9)
    assert ours07[0] > 0.1 and not np.allclose(ours07, ours_area)
