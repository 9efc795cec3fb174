"""Arguments and helpers shared by the verbs: backbone flags, data flags, building a RunContext."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from .._argtypes import NONNEGATIVE_INT, POSITIVE_INT, SEED
from ..errors import BenchError

__all__ = ["add_backbone_args", "add_pos_embed_rule_arg", "add_data_args", "load_backbone_from_args", "make_context", "device_from_arg",
           "check_run_args", "check_writable_dir"]


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbone")
    g.add_argument("--model", help="timm/torchvision architecture, random weights unless --ckpt is given "
                                   "(with no --model, --ckpt or --features: bench's packaged reference checkpoint and a random "
                                   "model of its arch, side by side); a timm pretrained tag "
                                   "(vit_small_patch14_dinov2.lvd142m) or hf-hub:org/name loads those weights "
                                   "from the Hugging Face cache")
    g.add_argument("--ckpt", help="checkpoint file (.pth/.pt/.safetensors) or a name from checkpoints.yaml "
                                  "(fetched into the cache); layout and arch are read from the keys")
    g.add_argument("--arch", help="architecture of --ckpt (same names as --model; default: inferred; `from-keys`: "
                                  "build what the keys describe even if no one published that shape)")
    g.add_argument("--ckpt-key", help="sub-model to read: DINO/iBOT teacher (default) or student, data2vec "
                                      "model (default) or model_ema, or any top-level key")
    g.add_argument("--allow-partial", action="store_true", help="evaluate even if the load is incomplete")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of --ckpt (executes code in the file; trusted files only)")
    g.add_argument("--seed", type=SEED, default=0, help="seed for random init and any sampling (default 0)")
    add_pos_embed_rule_arg(g)


def add_pos_embed_rule_arg(p) -> None:
    # no `choices`: listing the rules would import torch at parser construction; a bad name is refused at load
    p.add_argument("--pos-embed-rule", metavar="RULE",
                   help="how a ViT --ckpt resamples its position grid off the stored size, instead of its family's "
                        "own rule: dino (DINO's bicubic, +0.1 offset), dinov2, dinov2-reg, mae, moco-v3, timm; recorded in the "
                        "record")


def add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "imagenet") -> None:
    g = p.add_argument_group("data and features")
    g.add_argument("--data-root", help="folder holding the datasets (default $BENCH_DATA, else the miniatures)")
    g.add_argument("--dataset", default=default_dataset, help=f"dataset name (default {default_dataset})")
    g.add_argument("--feature-mode", help="cls, avgpool, cls+avgpool, cls+avgpool-interleaved, last4-cls, pool")
    g.add_argument("--resolution", type=POSITIVE_INT, help="centre-crop size (resize scaled alike); miniatures default 64")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    g.add_argument("--workers", type=NONNEGATIVE_INT,
                   help="DataLoader workers (default: 0 on CPU; on GPU the usable cores, at most 8); feature "
                        "extraction on the CPU decodes in this many threads instead (0: torch's thread count)")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="linear/semisup training: drop unreadable images from their batch, log them and count them "
                        "in the record (not comparable); default: an unreadable image is an error naming it")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--amp", nargs="?", const="bf16", default="auto", choices=("auto", "off", "bf16", "fp16"),
                   help="autocast dtype of extraction and training, on any device (recorded): auto (default) = "
                        "the protocol's reference precision on a GPU, float32 elsewhere; bare --amp = bf16")
    g.add_argument("--cache-dir", help="feature cache (default $BENCH_CACHE or ~/.cache/bench)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")


def device_from_arg(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BenchError(f"--device {name}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (device.index or 0) >= n:
            raise BenchError(f"--device {name}: {n} CUDA device(s) visible; use --device cpu (or auto), or run on "
                             f"a machine with a GPU")
    elif device.type not in ("cpu", "mps"):
        raise BenchError(f"--device {name}: bench runs on cpu or cuda; use --device cpu, cuda or auto")
    return device


def check_run_args(args) -> None:
    """Flags that no protocol can use, refused before any model or data is touched."""
    if getattr(args, "batch_size", 1) is not None and getattr(args, "batch_size", 1) < 1:
        raise BenchError(f"--batch-size {args.batch_size}: must be at least 1")
    if getattr(args, "workers", None) is not None and args.workers < 0:
        raise BenchError(f"--workers {args.workers}: must be 0 or more")
    if getattr(args, "resolution", None) is not None and args.resolution < 1:
        raise BenchError(f"--resolution {args.resolution}: must be at least 1")
    device_from_arg(getattr(args, "device", "auto"))
    out = getattr(args, "out", None)
    if out is not None:
        check_writable_dir(Path(out), "--out")


def check_writable_dir(folder: Path, flag: str) -> None:
    """`folder` is (or can become) a folder this process can write to; checked up front, so a long run does not
    end in a traceback when its record is written."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise BenchError(f"{flag} {folder}: {probe} is a file, not a folder; give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{flag} {folder}: {probe} is not writable; choose a folder you can write to")


def load_backbone_from_args(args):
    from ..backbones import load_backbone
    if args.ckpt:
        return load_backbone(args.ckpt, args.arch or args.model, ckpt_key=args.ckpt_key,
                             allow_partial=args.allow_partial, trust_checkpoint=args.trust_checkpoint, seed=args.seed,
                             pos_embed_rule=getattr(args, "pos_embed_rule", None))
    if getattr(args, "pos_embed_rule", None):
        raise BenchError(f"--pos-embed-rule {args.pos_embed_rule}: applies to a checkpoint file; give --ckpt")
    if args.arch and args.model and args.arch != args.model:
        raise BenchError(f"--model {args.model} and --arch {args.arch} disagree; give one")
    return load_backbone(None, args.model or args.arch, seed=args.seed)


def make_context(args, dataset: str, backbone, features_dir=None, options=None):
    from ..data import cache_dir, resolve_data_root
    from ..runner import RunContext
    from .. import distributed as dd
    device = device_from_arg(args.device)
    dd.init_from_env(device.type)
    device = dd.local_device(device)
    # the cores this process may use (a SLURM/cgroup allotment), not the machine's; on the CPU the forward pass
    # needs those same cores, so training loaders decode in the main process and feature extraction in a pool of
    # threads taking turns with the forward (bench/cache.py)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else (min(8, cores) if device.type == "cuda" else 0)
    data_root = resolve_data_root(args.data_root) if features_dir is None or args.data_root else None
    return RunContext(dataset=dataset, data_root=data_root, backbone=backbone,
                      features_dir=Path(features_dir) if features_dir else None, feature_mode=args.feature_mode,
                      resolution=args.resolution, device=device, batch_size=args.batch_size, workers=workers,
                      cache_dir=None if args.no_cache else Path(args.cache_dir or cache_dir()), amp=args.amp,
                      seed=args.seed, quick=getattr(args, "quick", False), options=options or {},
                      skip_bad_images=getattr(args, "skip_bad_images", False))


