"""Label propagation as DINO's eval_video_segmentation.py, written as batched matrix work.

For frame t the sources are the first frame and the `n_last_frames` previous predictions (queue, :45-71); the
affinity is exp(cos / 0.1) between the target's patches and every source patch of the window (one matmul,
:122-129), restricted to a (2r+1)² spatial neighbourhood (:85-99, :131-135; here one broadcast comparison instead
of four nested loops), the top-k sources per target patch kept and normalised (:137-142), and the sources' soft
labels averaged with those weights (:144-150). The soft label map goes back into the queue; the output is that
map upsampled by the patch size (bilinear), min-max normalised per object (`norm_mask`, :102-110), arg-maxed and
resized to the frame's original size with nearest neighbour (:73-80).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["neighbourhood_mask", "propagate_step", "norm_mask", "propagate_video", "to_one_hot"]


def neighbourhood_mask(h: int, w: int, size: int, device=None) -> torch.Tensor:
    """(h·w, h·w) float mask: 1 where the source patch lies within `size` rows and columns of the target patch."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    near = ((yy[:, None] - yy[None, :]).abs() <= size) & ((xx[:, None] - xx[None, :]).abs() <= size)
    return near.float()


def to_one_hot(seg: torch.Tensor, n: int) -> torch.Tensor:
    """(h, w) int ids → (1, n, h, w) float one-hot (DINO `to_one_hot`)."""
    return F.one_hot(seg.long(), n).permute(2, 0, 1).unsqueeze(0).float()


def propagate_step(feat_tar: torch.Tensor, feat_sources: torch.Tensor, segs: torch.Tensor, *, h: int, w: int,
                   topk: int, mask: torch.Tensor | None, temperature: float = 0.1) -> torch.Tensor:
    """feat_tar (hw, d), feat_sources (n_ctx, d, hw) raw features; segs (n_ctx, C, h, w) → (1, C, h, w)."""
    n_ctx, d, hw = feat_sources.shape
    tar = F.normalize(feat_tar, dim=1, p=2)
    src = F.normalize(feat_sources, dim=1, p=2).permute(1, 0, 2).reshape(d, n_ctx * hw)
    # one (targets × every source patch of the window) matrix; DINO's transpose to (sources, targets) is left out:
    # its top-k over sources and column sums are this matrix's row top-k and row sums
    aff = torch.exp(tar @ src / temperature)
    if mask is not None:
        aff = (aff.view(hw, n_ctx, hw) * mask[:, None, :]).view(hw, n_ctx * hw)
    kth = torch.topk(aff, dim=1, k=topk).values[:, -1:]
    aff = aff.masked_fill_(aff < kth, 0)
    aff = aff / aff.sum(dim=1, keepdim=True)
    c = segs.shape[1]
    flat = segs.reshape(n_ctx, c, -1).transpose(2, 1).reshape(-1, c)      # (n_ctx·hw, C)
    return (aff @ flat).T.reshape(1, c, h, w)


def norm_mask(mask: torch.Tensor) -> torch.Tensor:
    """Per channel: (x − min) / max of the shifted map when its max is > 0 (DINO `norm_mask`)."""
    out = mask.clone()
    for c in range(mask.shape[0]):
        m = mask[c]
        if m.max() > 0:
            m = m - m.min()
            out[c] = m / m.max()
    return out


def propagate_video(feats: torch.Tensor, first_seg: torch.Tensor, *, patch: int, out_size: tuple[int, int],
                    n_last_frames: int, topk: int, size_mask_neighborhood: int,
                    temperature: float = 0.1) -> list[np.ndarray]:
    """feats (T, d, h, w) of every frame; first_seg (1, C, h, w) one-hot at the grid → predicted ids per frame
    1..T-1 at `out_size` (H, W) of the original frames (uint8 arrays)."""
    from PIL import Image
    t_frames, d, h, w = feats.shape
    flat = feats.reshape(t_frames, d, h * w)
    mask = neighbourhood_mask(h, w, size_mask_neighborhood, feats.device) if size_mask_neighborhood > 0 else None
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []
    out = []
    for t in range(1, t_frames):
        sources = torch.stack([flat[0]] + [q[0] for q in queue])
        segs = torch.cat([first_seg] + [q[1] for q in queue])
        seg = propagate_step(flat[t].T, sources, segs, h=h, w=w, topk=topk, mask=mask, temperature=temperature)
        if len(queue) == n_last_frames:
            queue.pop(0)
        queue.append((flat[t], seg))
        up = F.interpolate(seg, scale_factor=patch, mode="bilinear", align_corners=False,
                           recompute_scale_factor=False)[0]
        ids = torch.argmax(norm_mask(up), dim=0).cpu().numpy().astype(np.uint8)
        out.append(np.array(Image.fromarray(ids).resize((out_size[1], out_size[0]), Image.NEAREST)))
    return out
