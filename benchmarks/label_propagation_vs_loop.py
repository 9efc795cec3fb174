"""bench's batched label propagation (video_segmentation) against a straightforward per-frame loop.

    python3 benchmarks/label_propagation_vs_loop.py            # 480p DAVIS grid of a ViT/16: 30×53 patches, d 384
    python3 benchmarks/label_propagation_vs_loop.py --quick    # 15×20 patches, 6 frames

Reference: DINO's eval_video_segmentation.py as a plain loop — its spatial neighbourhood mask built with the four
nested Python loops of `restrict_neighborhood` (once per video, as DINO caches it), and each target frame's
affinity computed one context frame at a time (mm per source frame, then DINO's top-k over all of them).
bench: `propagate_video` (bench/protocols/_video_segmentation_propagate.py): the mask from one broadcast
comparison and the affinity to the whole context window in one bmm. Both propagate the same random features and
first-frame labels through the same queue of 7 previous frames; the script asserts the predicted label maps agree
and prints the time of each side and the ratio, for the mask and for the propagation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _util import best_time, limit_threads, machine  # noqa: E402


def loop_mask(h: int, w: int, size: int) -> torch.Tensor:
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * size + 1):
                for q in range(2 * size + 1):
                    if 0 <= i - size + p < h and 0 <= j - size + q < w:
                        mask[i, j, i - size + p, j - size + q] = 1
    return mask.reshape(h * w, h * w)


def loop_propagate(feats: torch.Tensor, first_seg: torch.Tensor, mask: torch.Tensor, n_last: int, topk: int):
    t_frames, d, h, w = feats.shape
    flat = F.normalize(feats.reshape(t_frames, d, h * w), dim=1)
    queue, out = [], []
    for t in range(1, t_frames):
        ctx = [(flat[0], first_seg)] + queue
        tar = flat[t].T
        affs = [torch.exp(tar @ src / 0.1) * mask for src, _ in ctx]        # one context frame at a time
        aff = torch.cat([a.T for a in affs])                                # (n_ctx·hw, hw)
        kth = torch.topk(aff, k=topk, dim=0).values.min(0).values
        aff[aff < kth] = 0
        aff = aff / aff.sum(0, keepdim=True)
        segs = torch.cat([s.reshape(s.shape[1], -1) for _, s in ctx], dim=1)   # (C, n_ctx·hw)
        seg = (segs @ aff).reshape(1, -1, h, w)
        queue = (queue + [(flat[t], seg)])[-n_last:]
        out.append(seg.argmax(1)[0])
    return out


def batched(feats, first_seg, size, n_last, topk):
    from bench.protocols._video_segmentation_propagate import neighbourhood_mask, propagate_step
    t_frames, d, h, w = feats.shape
    flat = feats.reshape(t_frames, d, h * w)
    mask = neighbourhood_mask(h, w, size)
    queue, out = [], []
    for t in range(1, t_frames):
        sources = torch.stack([flat[0]] + [q[0] for q in queue])
        segs = torch.cat([first_seg] + [q[1] for q in queue])
        seg = propagate_step(flat[t].T, sources, segs, h=h, w=w, topk=topk, mask=mask)
        queue = (queue + [(flat[t], seg)])[-n_last:]
        out.append(seg.argmax(1)[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    limit_threads(a.threads)
    h, w, d, size, frames = (15, 20, 64, 4, 6) if a.quick else (30, 53, 384, 12, a.frames)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(d, h, w, generator=g)
    feats = torch.stack([base + 0.3 * torch.randn(d, h, w, generator=g) for _ in range(frames)])
    ids = torch.zeros(h, w, dtype=torch.long)
    ids[h // 4:h // 2, w // 4:w // 2], ids[h // 2:, w // 2:] = 1, 2
    first = F.one_hot(ids, 3).permute(2, 0, 1)[None].float()
    print(f"machine: {machine()}; {a.threads} thread(s); {frames} frames of {h}×{w} patches, d {d}, "
          f"neighbourhood {size}, 7 previous frames, top-5")
    from bench.protocols._video_segmentation_propagate import neighbourhood_mask
    got = {}
    t_mask_loop = best_time(lambda: got.__setitem__("mask", loop_mask(h, w, size)), a.repeats, warmup=0)
    t_mask = best_time(lambda: neighbourhood_mask(h, w, size), a.repeats)
    assert torch.equal(got["mask"], neighbourhood_mask(h, w, size))
    t_loop = best_time(lambda: got.__setitem__("loop", loop_propagate(feats, first, got["mask"], 7, 5)), a.repeats)
    t_ours = best_time(lambda: got.__setitem__("ours", batched(feats, first, size, 7, 5)), a.repeats)
    agree = np.mean([float((x == y).float().mean()) for x, y in zip(got["loop"], got["ours"])])
    assert agree >= 0.999, f"label maps differ on {100 * (1 - agree):.2f}% of patches"
    print(f"neighbourhood mask: nested loops {t_mask_loop * 1e3:9.1f} ms   bench {t_mask * 1e3:8.2f} ms   "
          f"ratio {t_mask_loop / t_mask:8.1f}×")
    print(f"propagation:        per-frame    {t_loop * 1e3:9.1f} ms   bench {t_ours * 1e3:8.1f} ms   "
          f"ratio {t_loop / t_ours:8.1f}×   (labels agree on {100 * agree:.2f}% of patches)")


if __name__ == "__main__":
    main()
