"""Fast R-CNN with external proposals on VOC2007 (Girshick 2015, rbgirshick/fast-rcnn), over a bench backbone.

Proposals: selective search boxes in the published `selective_search_data/voc_2007_<set>.mat` (Fast R-CNN's
data/scripts/fetch_selective_search_data.sh): `boxes`, a 1 × N cell array in image-set order, each (K, 4) of
1-based inclusive [y1 x1 y2 x2]; `images` (when present) the image ids, checked against the image set.
lib/datasets/pascal_voc.py:_load_selective_search_roidb reads them as `boxes[:, (1, 0, 3, 2)] - 1`; here they
become bench's continuous boxes (x1 - 1, y1 - 1, x2, y2), the convention of bench.data.voc's ground truth. Or
`proposals: opencv`: selective search ("fast" mode) computed with opencv-contrib's cv2.ximgproc (optional).

Network: the trunk's last conv map (AlexNet conv5 / VGG-16 conv5_3 without pool5, stride 16) → RoI max pooling
(`roi_size`² cells, torchvision.ops.roi_pool; Fast R-CNN's RoIPool) → fc6, fc7 (ReLU, dropout 0.5; re-initialised
as in every transfer task) → 21-way classifier and 84 box deltas (N(0, 0.01) / N(0, 0.001) as
models/*/train.prototxt). torchvision's RoIHeads samples the RoIs: `rois_per_image` per image, a quarter of them
with IoU ≥ 0.5, the rest background; proposals whose best IoU is under `bg_thresh_lo` (0.1) are dropped first, as
Fast R-CNN's background range [0.1, 0.5) does; ground-truth boxes join the proposals (roidb merge). Loss: softmax
+ smooth-L1 (σ = 1, beta 1) on targets normalised by (0.1, 0.1, 0.2, 0.2). Solver (models/CaffeNet/solver.prototxt,
tools/train_net.py): SGD lr 0.001, momentum 0.9, weight decay 5e-4, × 0.1 at 30k of 40k iterations, 2 images ×
64 RoIs, short side 600 (max 1000), horizontal flips (TRAIN.USE_FLIPPED); CaffeNet keeps conv1 fixed
(`freeze_convs`). Caffe's doubled bias lr and bias decay 0 are not reproduced.

Test (lib/fast_rcnn/test.py): scores are the softmax, boxes the class-specific regressions of each proposal;
per class the top `max_per_image` (100) scores of each image, then over the set those above the
(40 · images)-th best score, then NMS 0.3 (apply_nms). Multi-scale (experiments/cfgs/multiscale.yml: 480, 576,
688, 864, 1200, max 2000): each proposal is pooled from the one scale where its area is closest to 224²
(_project_im_rois). mAP: VOC2007 11-point AP at IoU 0.5 over the classes present, bench.metrics.detection.
"""
from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BenchError, DataError
from ..precision import Precision
from ..train import check_finite
from ._voc_transfer_nets import ConvTrunk, clip_and_step, init_fc, loss_summary, sgd, shuffled_forever, step_lr

__all__ = ["read_proposals", "selective_search", "FastRCNN", "run_detection"]


def read_proposals(path: Path, image_ids: list[str]) -> list[np.ndarray]:
    """Per image (K, 4) float32 boxes, bench's continuous x1 y1 x2 y2, from a Fast R-CNN selective_search_data
    .mat whose `boxes` (and `images`, when present) follow the image set's order."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError
    try:
        data = loadmat(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: proposal file not found; run fast-rcnn's data/scripts/fetch_selective_search_data"
                        f".sh and put selective_search_data/ under VOCdevkit/ (or --set proposals=opencv)") from None
    except (OSError, ValueError, NotImplementedError, TypeError, MatReadError) as e:
        raise DataError(f"{path}: not a readable MATLAB proposal file ({e}); re-download the selective search "
                        f"data") from None
    if "boxes" not in data:
        raise DataError(f"{path}: no `boxes` cell array (keys {sorted(k for k in data if not k.startswith('__'))});"
                        f" expected Fast R-CNN's selective_search_data layout")
    raw = data["boxes"].ravel()
    if len(raw) != len(image_ids):
        raise DataError(f"{path}: proposals for {len(raw)} images, the image set has {len(image_ids)}; use the "
                        f"file of the same image set")
    if "images" in data:
        names = [str(np.asarray(n).ravel()[0]) if np.asarray(n).size else "" for n in data["images"].ravel()]
        bad = next((i for i, (a, b) in enumerate(zip(names, image_ids)) if a != b), None)
        if bad is not None:
            raise DataError(f"{path}: image {bad} is {names[bad]!r} in the proposal file, {image_ids[bad]!r} in the "
                            f"image set; use the file of the same image set")
    out = []
    for i, b in enumerate(raw):
        b = np.asarray(b, dtype=np.float64)
        if b.size and (b.ndim != 2 or b.shape[1] != 4):
            raise DataError(f"{path}: proposals of image {image_ids[i]!r} have shape {b.shape}, not (K, 4)")
        b = b.reshape(-1, 4)[:, (1, 0, 3, 2)]
        out.append(np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]], 1).astype(np.float32))
    return out


def selective_search(img, max_boxes: int = 2000) -> np.ndarray:
    """Selective search "fast" (opencv-contrib cv2.ximgproc) on a PIL image: (K, 4) continuous x1 y1 x2 y2."""
    try:
        import cv2
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    except (ImportError, AttributeError):
        raise BenchError("proposals=opencv needs opencv-contrib (pip install opencv-contrib-python-headless); or "
                         "use the published selective_search_data .mat files (--set proposals=selective_search_data)"
                         ) from None
    ss.setBaseImage(np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1]))
    ss.switchToSelectiveSearchFast()
    r = np.asarray(ss.process()[:max_boxes], dtype=np.float32).reshape(-1, 4)   # x, y, w, h
    return np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1)


class _RoIPool(nn.Module):
    """RoIHeads' pooler: max pooling of each RoI into size² cells on the single map "0" at 1 / stride."""

    def __init__(self, size: int, stride: float):
        super().__init__()
        self.size, self.scale = size, 2.0 ** -round(np.log2(stride))

    def forward(self, features, proposals, image_shapes):
        from torchvision.ops import roi_pool
        # in float32 on every device: torchvision's CUDA autocast rule for roi_pool, which has none on the CPU
        return roi_pool(features["0"].float(), [r.float() for r in proposals], self.size, self.scale)


class _BoxHead(nn.Module):
    def __init__(self, in_features: int, hidden: int, dropout: float):
        super().__init__()
        self.fc6, self.fc7, self.drop = nn.Linear(in_features, hidden), nn.Linear(hidden, hidden), nn.Dropout(dropout)
        init_fc([self.fc6, self.fc7])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(torch.relu(self.fc7(self.drop(torch.relu(self.fc6(x.flatten(1)))))))


class FastRCNN(nn.Module):
    def __init__(self, trunk: ConvTrunk, p, hidden: int, num_classes: int = 21):
        super().__init__()
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
        from torchvision.models.detection.roi_heads import RoIHeads
        from ._detection_d2_parts import BetaRoIHeads
        self.trunk = trunk
        predictor = FastRCNNPredictor(hidden, num_classes)
        nn.init.normal_(predictor.cls_score.weight, 0, 0.01)
        nn.init.normal_(predictor.bbox_pred.weight, 0, 0.001)
        nn.init.zeros_(predictor.cls_score.bias)
        nn.init.zeros_(predictor.bbox_pred.bias)
        self.roi_heads = RoIHeads(_RoIPool(p.roi_size, trunk.stride),
                                  _BoxHead(trunk.out_channels * p.roi_size ** 2, hidden, p.dropout), predictor,
                                  fg_iou_thresh=p.fg_thresh, bg_iou_thresh=p.fg_thresh,
                                  batch_size_per_image=p.rois_per_image, positive_fraction=p.fg_fraction,
                                  bbox_reg_weights=(10.0, 10.0, 5.0, 5.0), score_thresh=0.0, nms_thresh=p.nms,
                                  detections_per_img=p.max_per_image)
        self.roi_heads.__class__, self.roi_heads.smooth_l1_beta = BetaRoIHeads, 1.0   # Fast R-CNN: sigma 1

    def scored_boxes(self, x: torch.Tensor, rois: torch.Tensor, size: tuple[int, int]):
        """(softmax scores (K, 21), boxes (K, 21, 4) in the coordinates of `rois`) for one resized image whose
        RoIs are given at that size."""
        rh = self.roi_heads
        feats = {"0": self.trunk(x)}
        h = rh.box_head(rh.box_roi_pool(feats, [rois], [size]))
        logits, deltas = (t.float() for t in rh.box_predictor(h))   # scores and boxes in float32 under autocast
        return F.softmax(logits, -1), rh.box_coder.decode(deltas, [rois]).reshape(len(rois), -1, 4)


def _resize(img, short: int, max_size: int, mean, std) -> tuple[torch.Tensor, float]:
    """Fast R-CNN's prep_im_for_blob: short side → `short`, long side capped at max_size; (CHW tensor, factor)."""
    from torchvision.transforms.functional import normalize, to_tensor
    w, h = img.size
    f = min(short / min(w, h), max_size / max(w, h))
    x = to_tensor(img)[None]
    x = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear", align_corners=False)
    return normalize(x[0], mean, std), f


def _iou_max(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    from torchvision.ops import box_iou
    if not len(gt) or not len(boxes):
        return np.zeros(len(boxes))
    return box_iou(torch.as_tensor(boxes), torch.as_tensor(gt)).max(1).values.numpy()


def _train(model: FastRCNN, data, proposals: list[np.ndarray], p, geo, scales, *, mean, std, device,
           seed: int, prec: Precision) -> dict[str, Any]:
    rh = model.roi_heads
    opt, scaler = sgd(model, p), prec.grad_scaler()
    rng = np.random.default_rng(seed)
    model.train()
    model.trunk.eval()
    losses, stream = [], shuffled_forever(len(data), rng)
    for it in range(geo.iterations):
        step_lr(opt, it, geo.lr_step, p.lr_gamma)
        images, rois, targets, sizes = [], [], [], []
        for _ in range(p.images_per_batch):
            i = next(stream)
            img, t = data[i]
            x, f = _resize(img, int(rng.choice(scales)), round(p.max_size * geo.scale), mean, std)
            boxes, gt = proposals[i].copy(), t["boxes"].copy()
            boxes = boxes[_iou_max(boxes, gt) >= p.bg_thresh_lo]   # never sampled by Fast R-CNN
            boxes, gt = boxes * f, gt * f
            if rng.random() < 0.5:
                x, w = x.flip(-1), x.shape[-1]
                boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
                gt = np.stack([w - gt[:, 2], gt[:, 1], w - gt[:, 0], gt[:, 3]], 1)
            images.append(x)
            sizes.append(tuple(x.shape[-2:]))
            rois.append(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(device))
            targets.append({"boxes": torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 4).to(device),
                            "labels": torch.as_tensor(t["labels"], dtype=torch.int64).to(device)})
        hmax, wmax = max(s[0] for s in sizes), max(s[1] for s in sizes)
        batch = torch.zeros(len(images), 3, hmax, wmax)
        for b, x in enumerate(images):
            batch[b, :, :x.shape[1], :x.shape[2]] = x
        with prec.autocast():
            _, loss_dict = rh({"0": model.trunk(batch.to(device))}, rois, sizes, targets)
            loss = sum(loss_dict.values())
        check_finite(loss, f"voc_transfer detection iteration {it}", fix="lower the lr")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        clip_and_step(opt, model, p.clip_grad, scaler)
        losses.append(loss.item())
    return {"iterations": geo.iterations, **loss_summary(losses)}


@torch.no_grad()
def _detect_image(model: FastRCNN, img, rois: np.ndarray, scales, max_size: int, *, mean, std, device,
                  prec: Precision):
    """(scores (K, 21), boxes (K, 21, 4)) in original coordinates; each RoI pooled at its test scale."""
    w, h = img.size
    k = len(rois)
    scores, boxes = torch.zeros(k, 21), torch.zeros(k, 21, 4)
    if not k:
        return scores.numpy(), boxes.numpy()
    factors = [min(s / min(w, h), max_size / max(w, h)) for s in scales]
    areas = (rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])
    level = np.abs(areas[:, None] * np.square(factors)[None] - 224 * 224).argmin(1) if len(scales) > 1 \
        else np.zeros(k, dtype=int)
    for lv, s in enumerate(scales):
        keep = np.flatnonzero(level == lv)
        if not len(keep):
            continue
        x, f = _resize(img, s, max_size, mean, std)
        r = torch.as_tensor(rois[keep] * f, dtype=torch.float32).to(device)
        with prec.autocast():
            sc, bx = model.scored_boxes(x[None].to(device), r, tuple(x.shape[-2:]))
        scores[keep], boxes[keep] = sc.float().cpu(), bx.float().cpu() / f
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, h)
    return scores.numpy(), boxes.numpy()


def _fast_rcnn_detections(per_image: list[tuple[str, np.ndarray, np.ndarray]], p) -> list[dict[str, Any]]:
    """test_net's selection: top max_per_image per image and class, the set's top 40·N per class, NMS."""
    from torchvision.ops import nms
    n_cls, max_per_set = per_image[0][1].shape[1] if per_image else 21, 40 * len(per_image)
    kept: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in per_image]
    for j in range(1, n_cls):
        heap: list[float] = []
        thresh = -np.inf
        for i, (_, scores, boxes) in enumerate(per_image):
            idx = np.flatnonzero(scores[:, j] > thresh)
            idx = idx[np.argsort(-scores[idx, j], kind="stable")][:p.max_per_image]
            for s in scores[idx, j]:
                heapq.heappush(heap, float(s))
            while len(heap) > max_per_set:
                heapq.heappop(heap)
            if len(heap) == max_per_set:
                thresh = heap[0]
            kept[i][j] = (scores[idx, j], boxes[idx, j])
        for i in range(len(per_image)):
            s, b = kept[i][j]
            m = s > thresh
            s, b = s[m], b[m]
            if len(s):
                keep = nms(torch.as_tensor(b, dtype=torch.float32), torch.as_tensor(s, dtype=torch.float32),
                           p.nms).numpy()
                s, b = s[keep], b[keep]
            kept[i][j] = (s, b)
    out = []
    for (image_id, _, _), classes in zip(per_image, kept):
        out.append({"image_id": image_id,
                    "scores": np.concatenate([classes[j][0] for j in sorted(classes)] or [np.zeros(0)]),
                    "boxes": np.concatenate([classes[j][1].reshape(-1, 4) for j in sorted(classes)]
                                            or [np.zeros((0, 4))]),
                    "labels": np.concatenate([np.full(len(classes[j][0]), j) for j in sorted(classes)]
                                             or [np.zeros(0, dtype=np.int64)]).astype(np.int64)})
    return out


def _proposals_for(ctx, p, data, split: str) -> tuple[list[np.ndarray], str]:
    if p.proposals == "opencv":
        return [selective_search(data[i][0]) for i in range(len(data))], "opencv selective search (fast)"
    folder = Path(p.proposals)
    if not folder.is_absolute():
        folder = ctx.data_root.path / "VOCdevkit" / folder
    path = folder / f"voc_{split.replace('-', '_')}.mat"
    ids = [data.image_id(i).split("/", 1)[1] for i in range(len(data))]
    return read_proposals(path, ids), str(path)


def _evaluate(model, data, proposals, scales, max_size, p, *, mean, std, device, prec: Precision
              ) -> tuple[float, dict]:
    from ..data.voc import VOC_CLASSES
    from ..metrics.detection import voc_ap_samples, voc_detection_metrics
    from ._detection_evaluate import _class_detections, voc_ground_truth
    model.eval()
    per_image = []
    for i in range(len(data)):
        img, t = data[i]
        scores, boxes = _detect_image(model, img, proposals[i], scales, max_size, mean=mean, std=std, device=device,
                                      prec=prec)
        per_image.append((t["image_id"], scores, boxes))
    predictions = _fast_rcnn_detections(per_image, p)
    dets, gts = _class_detections(predictions, VOC_CLASSES), voc_ground_truth(data, VOC_CLASSES)
    metrics, details = voc_detection_metrics(dets, gts, grid="devkit")
    return metrics["AP50"], {"_samples": voc_ap_samples(dets, gts, grid="devkit"), "per_class_AP50": {c: v["AP50"] for c, v in details["per_class_AP"].items()},
                             "classes_evaluated": details["classes_evaluated"],
                             "n_detections": int(sum(len(d["scores"]) for d in predictions))}


def _freeze_convs(trunk: ConvTrunk, n: int) -> None:
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d) and any(q.requires_grad for q in m.parameters())]
    for m in convs[:n]:
        m.requires_grad_(False)


def run_detection(ctx, p, geo) -> tuple[dict[str, float], dict[str, Any]]:
    from ._voc_transfer_nets import freeze_trunk
    backbone = ctx.require_backbone("voc_transfer detection")
    train, test = ctx.open_images(p.train_split, None, "voc"), ctx.open_images(p.eval_split, None, "voc")
    for split, ds in ((p.train_split, train), (p.eval_split, test)):
        ctx.inputs[f"voc/{split}"] = {"source": "images", "count": len(ds)}
    train_props, train_src = _proposals_for(ctx, p, train, p.train_split)
    test_props, test_src = _proposals_for(ctx, p, test, p.eval_split)
    torch.manual_seed(ctx.seed)
    trunk = ConvTrunk(backbone.model, drop_last_pool=True)
    model = FastRCNN(trunk, p, geo.hidden).to(ctx.device)
    frozen = freeze_trunk(trunk, p.finetune, p.train_batchnorm)
    if p.finetune == "all":
        _freeze_convs(trunk, p.freeze_convs)
    pre = backbone.preprocessing
    sc = lambda sizes: tuple(max(1, round(s * geo.scale)) for s in sizes)   # noqa: E731
    prec = ctx.precision("train")   # Caffe trained in float32; --amp autocasts on any device
    info = _train(model, train, train_props, p, geo, sc(p.train_scales), mean=pre.mean, std=pre.std,
                  device=ctx.device, seed=ctx.seed, prec=prec)
    ss, ss_details = _evaluate(model, test, test_props, sc(p.test_scales), round(p.max_size * geo.scale), p,
                               mean=pre.mean, std=pre.std, device=ctx.device, prec=prec)
    ms, ms_details = _evaluate(model, test, test_props, sc(p.ms_test_scales), round(p.ms_max_size * geo.scale), p,
                               mean=pre.mean, std=pre.std, device=ctx.device, prec=prec)
    details = {"train": info, "proposals": {"train": train_src, "test": test_src,
                                            "mean_per_image_test": float(np.mean([len(b) for b in test_props]))},
               "trunk": trunk.kind, "trunk_stride": trunk.stride, **frozen,
               "scales": {"train": sc(p.train_scales), "test": sc(p.test_scales), "test_ms": sc(p.ms_test_scales)},
               "_samples": {"mAP": ss_details.pop("_samples"), "mAP_ms": ms_details.pop("_samples")},
               "single_scale": ss_details, "multi_scale": ms_details,
               "mAP_definition": "VOC2007 11-point AP at IoU 0.5 (devkit grid), classes present in the test split"}
    return {"mAP": ss, "mAP_ms": ms}, details
