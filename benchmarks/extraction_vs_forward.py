"""Feature extraction throughput relative to the backbone's bare forward pass on the same device and batch.

Bare forward: one pre-built batch pushed through the model repeatedly (no decoding, no transfer).
Extraction: bench's extract_features over real JPEG files (decode + resize + crop + normalise in DataLoader
workers, pinned memory and channels_last on GPU). The ratio is the fraction of the model's own throughput that
extraction keeps; issue 11 asks for ≥ 0.90.

    python benchmarks/extraction_vs_forward.py --model resnet50 --resolution 224 --batch-size 64 --workers 8
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

# run from a checkout without installing: this repository's bench, not another installed copy
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_time, machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--resolution", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true")
    args = p.parse_args()
    os.environ["BENCH_PROGRESS"] = "0"

    from bench import load_backbone
    from bench.cache import extract_features
    from bench.data import TransformSpec, build_eval_transform, open_dataset
    from bench.data.mini import write_minis

    device = torch.device(args.device)
    bb = load_backbone(None, args.model)
    model = bb.model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    spec = TransformSpec(resize=round(args.resolution * 256 / 224), crop=args.resolution,
                         mean=bb.preprocessing.mean, std=bb.preprocessing.std)
    with tempfile.TemporaryDirectory() as tmp:
        write_minis(Path(tmp), ["imagenet"])
        ds = open_dataset("imagenet", Path(tmp), "train", build_eval_transform(spec), mini=True)
        n = len(ds)
        batch = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        steps = -(-n // args.batch_size)

        @torch.inference_mode()
        def forward_only():
            for _ in range(steps):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                    bb.features(batch)
            if device.type == "cuda":
                torch.cuda.synchronize()

        def extraction():
            extract_features(bb, ds, split="train", dataset_name="imagenet", feature_mode=bb.feature_mode,
                             transform=spec.to_dict(), data_root=tmp, cache_dir=None, batch_size=args.batch_size,
                             workers=args.workers, device=device, amp=args.amp)

        t_fwd = best_time(forward_only)
        t_ext = best_time(extraction)
    print(f"machine: {machine()}")
    print(f"{args.model} @ {args.resolution}px, batch {args.batch_size}, {args.workers} workers, {n} images, "
          f"device {device}{', bf16' if args.amp else ''}")
    print(f"bare forward : {steps * args.batch_size / t_fwd:8.1f} img/s")
    print(f"extraction   : {n / t_ext:8.1f} img/s")
    print(f"ratio extraction / forward = {(n / t_ext) / (steps * args.batch_size / t_fwd):.3f}")


if __name__ == "__main__":
    main()
