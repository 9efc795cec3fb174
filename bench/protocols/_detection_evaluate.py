"""Inference over the test split and VOC AP, as detectron2's PascalVOCDetectionEvaluator.

Detections are what the model returns after its own post-processing (torchvision defaults = detectron2's: score
> 0.05, per-class NMS 0.5, 100 per image), in original-image coordinates. detectron2 does not score those floats:
`process()` writes each one as text (xmin + 1, ymin + 1 back to the devkit's 1-based pixels; score %.3f, box %.1f)
and `voc_eval` reads the text back; `detectron2_text_roundtrip` reproduces that, so the rounded scores tie and the
rounded boxes cross IoU thresholds exactly as there. The ground truth is read straight from the XML, as there.
Each rank predicts a shard; shards are gathered and put back in dataset order, the order detectron2's inference
sampler gives at any world size, so voc_eval's (unstable) argsort sees the same array and orders ties the same.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from ..metrics.detection import (ClassDetections, ClassGroundTruth, detectron2_text_roundtrip,
                                  voc_ap_samples, voc_detection_metrics)
from ..distributed import dist_info
from ..precision import Precision
from ._detection_engine import collate_lists, to_tensor_target

__all__ = ["predict", "voc_ground_truth", "evaluate_voc"]

_TO_XML = np.array([1.0, 1.0, 0.0, 0.0])   # detectron2 coordinates → the devkit's 1-based inclusive pixels


class _EvalImages(torch.utils.data.Dataset):
    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, target = to_tensor_target(*self.base[i])
        return image, {**target, "_index": i}


@torch.inference_mode()
def predict(model: torch.nn.Module, dataset, *, device: torch.device, batch_size: int = 2, workers: int = 0,
            amp: Precision | None = None, desc: str = "detect") -> list[dict[str, Any]]:
    """[{image_id, boxes (N,4) xyxy, scores (N,), labels (N,)}] for every image, gathered across ranks; `amp`: the
    autocast dtype (float32 when None)."""
    from tqdm.auto import tqdm
    rank, world = dist_info()
    shard = Subset(_EvalImages(dataset), list(range(rank, len(dataset), world)))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=collate_lists)
    core = model.module if hasattr(model, "module") else model
    core.eval()
    out: list[dict[str, Any]] = []
    for images, targets in tqdm(loader, desc=desc, unit="batch", leave=False,
                                disable=rank != 0 or os.environ.get("BENCH_PROGRESS", "1") == "0"):
        with (amp or Precision(device.type)).autocast():
            preds = core([x.to(device) for x in images])
        for t, p in zip(targets, preds):
            out.append({"image_id": t["image_id"], "index": int(t["_index"]),
                        **{k: p[k].float().cpu().numpy() if k != "labels" else p[k].cpu().numpy()
                           for k in ("boxes", "scores", "labels")}})
    if world > 1:
        parts: list = [None] * world
        dist.all_gather_object(parts, out)
        out = [d for part in parts for d in part]
    return sorted(out, key=lambda d: d["index"])


def voc_ground_truth(dataset, class_names: tuple[str, ...]) -> dict[str, ClassGroundTruth]:
    """Per class: every test image (empty where the class is absent) with its XML boxes and difficult flags."""
    gts = {c: ClassGroundTruth() for c in class_names}
    for i in range(len(dataset)):
        t = dataset.target(i)
        boxes = t["boxes"].astype(np.float64) + _TO_XML
        for c, name in enumerate(class_names, start=1):
            keep = t["labels"] == c
            gts[name].boxes[t["image_id"]] = boxes[keep]
            gts[name].difficult[t["image_id"]] = t["difficult"][keep]
    return gts


def _class_detections(predictions: list[dict], class_names: tuple[str, ...]) -> dict[str, ClassDetections]:
    """Per class, the detections as voc_eval reads them from detectron2's text files, in dataset order."""
    ids = np.concatenate([np.full(len(p["scores"]), p["image_id"], dtype=object) for p in predictions] or
                         [np.zeros(0, dtype=object)])
    scores = np.concatenate([p["scores"] for p in predictions] or [np.zeros(0)])
    boxes = np.concatenate([p["boxes"].reshape(-1, 4) for p in predictions] or [np.zeros((0, 4))])
    scores, boxes = detectron2_text_roundtrip(scores, boxes)       # adds the +1 of _TO_XML to xmin, ymin
    labels = np.concatenate([p["labels"] for p in predictions] or [np.zeros(0, dtype=np.int64)])
    return {name: ClassDetections(ids[labels == c], scores[labels == c], boxes[labels == c])
            for c, name in enumerate(class_names, start=1)}


def evaluate_voc(model: torch.nn.Module, dataset, class_names: tuple[str, ...], *, device: torch.device,
                 batch_size: int = 2, workers: int = 0, amp: Precision | None = None,
                 recall_grid: str = "devkit") -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics in percent, details): AP, AP50, AP75 (11-point on `recall_grid`) and their `_area` twins over the
    test split."""
    predictions = predict(model, dataset, device=device, batch_size=batch_size, workers=workers, amp=amp)
    dets, gts = _class_detections(predictions, class_names), voc_ground_truth(dataset, class_names)
    metrics, details = voc_detection_metrics(dets, gts, grid=recall_grid)
    # AP50's per-image statistics for the record's bootstrap interval (popped by the protocol)
    details["_samples"] = {"AP50": voc_ap_samples(dets, gts, grid=recall_grid)}
    details["detections_as"] = "detectron2 text round-trip (score %.3f, box %.1f, xmin/ymin + 1)"
    details["n_test_images"] = len(dataset)
    details["n_detections"] = int(sum(len(p["scores"]) for p in predictions))
    return metrics, details
