"""Semi-supervised video object segmentation on DAVIS-2017 val by label propagation on frozen features.

Paper: Caron et al. 2021, DINO (§4.2.2 / Table 5, "DAVIS 2017 video object segmentation"); code:
facebookresearch/dino eval_video_segmentation.py (propagation: bench/protocols/_video_segmentation_propagate.py).
Scoring: the DAVIS-2017 devkit's semi-supervised J, F and J&F-Mean (bench/metrics/davis.py), frames between the
first and the last, each object of the first frame separately.

Per sequence: every frame is resized as DINO's `read_frame` (:197-221: the short side to `short_side`, the long
side to the multiple of 64 below its proportional length, bilinear), its patch map of the last block through
the final norm (`get_intermediate_layers(n=1)`, CLS dropped, :153-163) — or a CNN's stage `cnn_layer_index` —
is extracted once and cached per frame and layer; the first frame's annotation is resized to the grid with
nearest neighbour and one-hot encoded (:224-241), then propagated frame by frame. Nothing is trained or tuned.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..backbones.features import is_vit
from ..errors import BenchError
from ..metrics.davis import davis_summary, db_eval_iou, f_measure
from . import ProtocolResult, register_protocol
from ._depth_features import DenseSpec, extract_dense

__all__ = ["VideoSegPreset", "run_video_segmentation", "frame_size"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSegPreset:
    n_last_frames: int = 7
    size_mask_neighborhood: int = 12
    topk: int = 5
    temperature: float = 0.1
    short_side: int = 480
    cnn_layer_index: int = -2                # a CNN's stage (stride 16 on a ResNet: the grid of a ViT/16)
    norm: bool = True
    mean: tuple[float, ...] | None = None    # None: the backbone's normalisation
    std: tuple[float, ...] | None = None
    split: str = "val"
    paper: str = ""
    source: str = ""
    notes: str = ""


def frame_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(th, tw) of DINO's read_frame: short side to `short_side`, long side floored to a multiple of 64."""
    if h > w:
        tw, th = short_side, int(((short_side * h) / w) // 64 * 64)
    else:
        th, tw = short_side, int(((short_side * w) / h) // 64 * 64)
    return th, tw


class _Frames(torch.utils.data.Dataset):
    def __init__(self, paths, size, mean, std):
        self.paths, self.size, self.mean, self.std = paths, size, mean, std

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from torchvision.transforms.functional import normalize, to_tensor
        from ..data.datasets import load_rgb
        x = to_tensor(load_rgb(self.paths[i]))
        x = torch.nn.functional.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False)[0]
        return normalize(x, self.mean, self.std), i


def _sequence(ctx, p: VideoSegPreset, seq, spec: DenseSpec, short_side: int):
    from PIL import Image
    from ..data.davis import read_annotation
    from ._video_segmentation_propagate import propagate_video, to_one_hot
    backbone = ctx.backbone
    pre = backbone.preprocessing
    mean, std = p.mean or pre.mean, p.std or pre.std
    first = read_annotation(seq.annotations[0])
    oh, ow = first.shape
    size = frame_size(oh, ow, short_side)
    feats = extract_dense(backbone, _Frames(seq.frames, size, mean, std), spec, cache_dir=ctx.cache_dir,
                          device=ctx.device, key={"davis_sequence": seq.name, "size": list(size),
                                                  "frames": [f.name for f in seq.frames], "mean": list(mean),
                                                  "std": list(std), "root": str(ctx.data_root.path)},
                          desc=f"frames {seq.name}")
    maps = torch.from_numpy(np.array(feats.maps[0])).float().to(ctx.device)
    h, w = maps.shape[-2:]
    patch = size[0] // h
    first_ids = first.copy()
    first_ids[first_ids == 255] = 0
    small = np.array(Image.fromarray(first_ids).resize((w, h), Image.NEAREST))
    n_obj = int(first_ids.max())
    seg = to_one_hot(torch.from_numpy(small), n_obj + 1).to(ctx.device)
    preds = propagate_video(maps, seg, patch=patch, out_size=(oh, ow), n_last_frames=p.n_last_frames, topk=p.topk,
                            size_mask_neighborhood=p.size_mask_neighborhood, temperature=p.temperature)
    return n_obj, preds, feats.meta["cache_hit"], size, (h, w)


def _score(seq, n_obj: int, preds: list[np.ndarray]):
    from ..data.davis import read_annotation
    j, f = {}, {}
    frames = range(1, len(seq.frames) - 1)                  # evaluation.py:85: first and last frames dropped
    gts = {t: read_annotation(seq.annotations[t]) for t in frames}
    for o in range(1, n_obj + 1):
        key = f"{seq.name}_{o}"
        j[key] = np.array([db_eval_iou((gts[t] == o), preds[t - 1] == o) for t in frames], dtype=np.float64)
        f[key] = np.array([f_measure(preds[t - 1] == o, gts[t] == o) for t in frames], dtype=np.float64)
    return j, f


@register_protocol("video_segmentation", preset_cls=VideoSegPreset, default_dataset="davis2017",
                   accepts_features=False)
def run_video_segmentation(ctx, preset: VideoSegPreset) -> ProtocolResult:
    """DAVIS-2017 semi-supervised label propagation (DINO): J&F-Mean, J-Mean, F-Mean."""
    from tqdm.auto import tqdm
    if ctx.dataset != "davis2017":
        raise BenchError(f"video_segmentation runs on davis2017, not {ctx.dataset!r}")
    backbone = ctx.require_backbone("video segmentation (dense features)")
    vit = is_vit(backbone.model)
    spec = DenseSpec(layers=(-1,) if vit else (preset.cnn_layer_index,), norm=preset.norm, cls=False, pad="crop")
    split = ctx.open_images(preset.split, None)
    short = ctx.resolution or preset.short_side
    j_all, f_all, info = {}, {}, {}
    for seq in tqdm(split.sequences, desc="DAVIS sequences", leave=False,
                    disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
        first_short = min(_first_size(seq))
        side = min(short, first_short) if ctx.mini else short
        n_obj, preds, hit, size, grid = _sequence(ctx, preset, seq, spec, side)
        if n_obj == 0:
            raise BenchError(f"{seq.annotations[0]}: the first frame has no object to propagate")
        j, f = _score(seq, n_obj, preds)
        j_all.update(j)
        f_all.update(f)
        info[seq.name] = {"frames": len(seq.frames), "objects": n_obj, "input_size": list(size),
                          "grid": list(grid), "cache_hit": hit}
    ctx.inputs[f"{ctx.dataset}/{preset.split}"] = {"source": "extracted", "count": len(split.sequences),
                                                   "dense": asdict(spec)}
    metrics = davis_summary(j_all, f_all)
    details: dict[str, Any] = {"sequences": info, "short_side": short,
                               "per_object": {k: {"J": round(100 * float(np.nanmean(j_all[k])), 4),
                                                  "F": round(100 * float(np.nanmean(f_all[k])), 4)}
                                              for k in j_all},
                               "selection": "none: label propagation has no trained parameter"}
    return ProtocolResult(metrics, details=details, headline=("J&F", "J", "F"))


def _first_size(seq) -> tuple[int, int]:
    from PIL import Image
    with Image.open(seq.frames[0]) as im:
        return im.height, im.width
