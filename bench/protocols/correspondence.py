"""Semantic keypoint correspondence on SPair-71k by nearest neighbour in frozen feature space.

Protocol of the probing papers (DIFT: Tang et al. 2023, Tsingularity/dift eval_spair.py `main`; also used on
DINO / DINOv2 features by El Banani et al. 2024, Probe3D): each image is resized to `image_size`² and its dense map
extracted once (cached per image and layer); for a pair, both maps are upsampled bilinearly to their original
image sizes, each source keypoint's feature is compared by cosine similarity with every target pixel, the
arg-max is the transferred keypoint, and it is correct when its distance to the target keypoint is ≤ α times
max(bbox h, w) of the target (PCK@α_bbox) or max(image h, w) (PCK@α_img). Nothing is trained or tuned.
Reported: per-point and per-image PCK over all pairs, per category, and the mean over categories.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.features import is_vit
from ..errors import BenchError
from ..metrics.correspondence import pck_correct, pck_summary
from . import ProtocolResult, register_protocol
from ._depth_features import DenseSpec, extract_dense

__all__ = ["CorrespondencePreset", "run_correspondence", "transfer_keypoints"]


@dataclass(frozen=True)
class CorrespondencePreset:
    image_size: int = 224
    layer_index: int = -1                   # ViT block (its patch tokens)
    cnn_layer_index: int = -2               # CNN stage (stride 16 on a ResNet)
    norm: bool = True
    alpha: float = 0.1
    split: str = "test"
    paper: str = ""
    source: str = ""
    notes: str = ""


class _Images(torch.utils.data.Dataset):
    def __init__(self, root, names, size, mean, std):
        self.root, self.names, self.size, self.mean, self.std = root, names, size, mean, std

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        from torchvision.transforms.functional import normalize, to_tensor
        from ..data.datasets import load_rgb
        img = load_rgb(self.root / self.names[i]).resize((self.size, self.size), 2)   # PIL bilinear
        return normalize(to_tensor(img), self.mean, self.std), i


def transfer_keypoints(src_map: torch.Tensor, trg_map: torch.Tensor, src_kps: np.ndarray,
                       src_size: tuple[int, int], trg_size: tuple[int, int]) -> np.ndarray:
    """(K, 2) x, y in the target image: arg-max cosine over the target map upsampled to `trg_size` (h, w) of each
    source keypoint's feature, read from the source map upsampled to `src_size` at its integer pixel (DIFT)."""
    src_up = F.interpolate(src_map[None], size=src_size, mode="bilinear", align_corners=False)[0]
    trg_up = F.interpolate(trg_map[None], size=trg_size, mode="bilinear", align_corners=False)[0]
    xy = np.asarray(src_kps, dtype=np.int64)
    vecs = F.normalize(src_up[:, xy[:, 1], xy[:, 0]].T, dim=1)                  # (K, C)
    flat = F.normalize(trg_up.reshape(trg_up.shape[0], -1).T, dim=1)            # (HW, C)
    best = torch.argmax(flat @ vecs.T, dim=0).cpu().numpy()                     # first maximum, as np.argmax
    return np.stack([best % trg_size[1], best // trg_size[1]], 1)


@register_protocol("correspondence", preset_cls=CorrespondencePreset, default_dataset="spair71k",
                   accepts_features=False)
def run_correspondence(ctx, preset: CorrespondencePreset) -> ProtocolResult:
    """SPair-71k keypoint transfer by feature nearest neighbour: PCK@0.1 (bbox and image), per category."""
    from tqdm.auto import tqdm
    if ctx.dataset != "spair71k":
        raise BenchError(f"correspondence runs on spair71k, not {ctx.dataset!r}")
    backbone = ctx.require_backbone("correspondence (dense features)")
    vit = is_vit(backbone.model)
    spec = DenseSpec(layers=(preset.layer_index if vit else preset.cnn_layer_index,), norm=preset.norm, cls=False,
                     pad="center")
    split = ctx.open_images(preset.split, None)
    size = ctx.resolution or preset.image_size
    pre = backbone.preprocessing
    images = _Images(split.images_dir, split.images, size, pre.mean, pre.std)
    feats = extract_dense(backbone, images, spec, cache_dir=ctx.cache_dir, device=ctx.device,
                          key={"dataset": ctx.dataset, "split": preset.split, "size": size, "images": split.images,
                               "root": str(ctx.data_root.path)}, desc=f"features spair/{preset.split}")
    row = {name: i for i, name in enumerate(split.images)}
    sizes: dict[str, tuple[int, int]] = {}
    ok_bbox, ok_img, cats = [], [], []
    for pair in tqdm(split.pairs, desc="pairs", leave=False, disable=os.environ.get("BENCH_PROGRESS", "1") == "0"):
        if pair.src not in sizes:
            from PIL import Image
            with Image.open(split.images_dir / pair.src) as im:
                sizes[pair.src] = (im.height, im.width)
        src_map = torch.from_numpy(np.array(feats.maps[0][row[pair.src]])).float().to(ctx.device)
        trg_map = torch.from_numpy(np.array(feats.maps[0][row[pair.trg]])).float().to(ctx.device)
        pred = transfer_keypoints(src_map, trg_map, pair.src_kps, sizes[pair.src], pair.trg_size)
        x1, y1, x2, y2 = pair.trg_bbox
        ok_bbox.append(pck_correct(pred, pair.trg_kps, max(y2 - y1, x2 - x1), preset.alpha))
        ok_img.append(pck_correct(pred, pair.trg_kps, max(pair.trg_size), preset.alpha))
        cats.append(pair.category)
    s_bbox, s_img = pck_summary(ok_bbox, cats), pck_summary(ok_img, cats)
    ctx.inputs[f"{ctx.dataset}/{preset.split}"] = {"source": "extracted", "count": len(split.pairs),
                                                   "images": len(split.images), "dense": asdict(spec),
                                                   "image_size": size, "cache_hit": feats.meta["cache_hit"]}
    metrics = {"pck_bbox": s_bbox["per_point"], "pck_bbox_per_image": s_bbox["per_image"],
               "pck_bbox_category_mean": s_bbox["category_mean"], "pck_img": s_img["per_point"],
               "pck_img_per_image": s_img["per_image"], "pck_img_category_mean": s_img["category_mean"]}
    details: dict[str, Any] = {"alpha": preset.alpha, "image_size": size, "n_pairs": len(split.pairs),
                               "n_keypoints": int(sum(len(o) for o in ok_bbox)),
                               "per_category": {c: {"pck_bbox": s_bbox["per_category"][c]["per_point"],
                                                    "pck_img": s_img["per_category"][c]["per_point"]}
                                                for c in s_bbox["per_category"]},
                               "selection": "none: nearest-neighbour transfer has no trained parameter"}
    return ProtocolResult(metrics, details=details, headline=("pck_bbox", "pck_img", "pck_bbox_category_mean"))
