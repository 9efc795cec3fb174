"""Fine-tuning throughput (images/s) of bench's real training loop relative to a bare forward+backward+step.

Fine-tuning step: `bench run --protocol finetune` itself (run_protocol on the ImageNet miniature, JPEGs re-saved at
--image-size so decoding costs what a real photo does), timed between its first and last optimiser update of the
first epoch through the loop's AFTER_UPDATE_HOOKS: DataLoader workers decoding + RandAugment + random erasing,
mixup/cutmix, the soft-target loss, AdamW over the layer-decay groups, the lr schedule, autocast on GPU.
Bare: the same fine-tuning model (same drop path, head, parameter groups), one pre-built batch already on the
device, forward + backward + AdamW step, best of --repeats. The ratio is the fraction of the model's own training
throughput the loop keeps; the data pipeline is not the bottleneck when it is near 1 (on a GPU with enough
workers). On a CPU-only machine the workers and the model share the same cores, so the ratio there is bounded by
how much CPU the augmentation takes, not by the loop.

    python3 benchmarks/finetune_step_vs_bare.py                          # CPU: ViT-Ti/16 @ 64 px, batch 64
    python3 benchmarks/finetune_step_vs_bare.py --model vit_base_patch16_224 --resolution 224 --batch-size 128 \
        --workers 8 --device cuda
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import best_time, machine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--preset", default="mae")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--updates", type=int, default=12, help="updates timed in the loop (after the first)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--image-size", default="500x375", help="WxH of the JPEGs on disk; 0 keeps the 32-px files")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    os.environ["BENCH_PROGRESS"] = "0"

    from extraction_vs_forward import _resave

    from bench import load_backbone
    from bench.data import DataRoot
    from bench.data.mini import write_minis
    from bench.presets import resolve_preset
    from bench.protocols import _finetune_train as ft
    from bench.protocols.finetune import FinetunePreset, effective_preset
    from bench.runner import RunContext, run_protocol

    device = torch.device(args.device)
    bb = load_backbone(None, args.model)
    # the loop's first epoch only, every image of it in full batches
    overrides = {"quick_epochs": 1, "quick_batch_size": args.batch_size, "quick_train_subset": 0}
    preset = effective_preset(resolve_preset("finetune", FinetunePreset, args.preset, overrides)[0], bb.report.arch)

    # bare: the same model, groups and optimiser on one batch already on the device
    model, _ = ft.build_finetune_model(bb, preset, 1000, args.resolution)
    model.to(device).train()
    opt = torch.optim.AdamW(ft.param_groups(model, preset), lr=1e-4)
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)

    def bare() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    bare_s = best_time(bare, repeats=args.repeats)
    del model, opt

    stamps: list[float] = []

    class Enough(Exception):
        pass

    def stamp(epoch: int, update: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if len(stamps) > args.updates:
            raise Enough   # enough updates timed: leave the loop
    rates = []
    with tempfile.TemporaryDirectory() as tmp:
        write_minis(Path(tmp), ["imagenet"])
        if args.image_size != "0":
            _resave(Path(tmp) / "imagenet", args.image_size)
        ft.AFTER_UPDATE_HOOKS.append(stamp)
        try:
            for r in range(args.repeats):
                stamps.clear()
                ctx = RunContext(dataset="imagenet", data_root=DataRoot(Path(tmp), mini=True, origin="benchmark"),
                                 backbone=bb, resolution=args.resolution, device=device, workers=args.workers,
                                 cache_dir=Path(tmp) / f"cache{r}", quick=True)
                try:
                    run_protocol("finetune", ctx, preset=args.preset, overrides=overrides, out_dir=Path(tmp) / "o")
                except Enough:
                    pass
                if len(stamps) < 2:
                    raise SystemExit("too few updates to time; lower --batch-size or --updates")
                rates.append((len(stamps) - 1) * args.batch_size / (stamps[-1] - stamps[0]))
        finally:
            ft.AFTER_UPDATE_HOOKS.remove(stamp)
    loop = max(rates)
    bare_rate = args.batch_size / bare_s
    print(f"machine: {machine()}")
    print(f"{args.model} @ {args.resolution} px, batch {args.batch_size}, preset {args.preset}, "
          f"{args.workers} workers, JPEGs {args.image_size}, device {device}")
    print(f"bare forward+backward+step: {bare_rate:8.1f} images/s")
    print(f"fine-tuning loop:           {loop:8.1f} images/s   (ratio {loop / bare_rate:.2f})")


if __name__ == "__main__":
    main()
