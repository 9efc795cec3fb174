"""The command line: a thin shell that parses, builds a RunContext and calls the library.

Verbs: run, extract, data, list. Every BenchError becomes one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _add_backbone_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbone")
    g.add_argument("--model", help="timm/torchvision architecture, random weights unless --ckpt is given "
                                   "(default without --ckpt: random resnet18)")
    g.add_argument("--ckpt", help="checkpoint file (.pth/.pt/.safetensors)")
    g.add_argument("--arch", help="architecture of --ckpt (same names as --model)")
    g.add_argument("--ckpt-key", help="sub-dict of the checkpoint to read, e.g. teacher or student")
    g.add_argument("--allow-partial", action="store_true", help="evaluate even if the load is incomplete")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of --ckpt (executes code in the file; trusted files only)")
    g.add_argument("--seed", type=int, default=0, help="seed for random init and any sampling (default 0)")


def _add_data_args(p: argparse.ArgumentParser, default_dataset: str | None = "imagenet") -> None:
    g = p.add_argument_group("data and features")
    g.add_argument("--data-root", help="folder holding the datasets (default $BENCH_DATA, else the miniatures)")
    g.add_argument("--dataset", default=default_dataset, help=f"dataset name (default {default_dataset})")
    g.add_argument("--feature-mode", help="cls, avgpool, cls+avgpool, cls+avgpool-interleaved, last4-cls, pool")
    g.add_argument("--resolution", type=int, help="centre-crop size (resize scaled alike); miniatures default 64")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU, 8 on GPU)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for extraction (recorded)")
    g.add_argument("--cache-dir", help="feature cache (default $BENCH_CACHE or ~/.cache/bench)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="bench", description="Evaluate self-supervised visual representations "
                                                                "with the papers' protocols.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = sub.add_parser("run", help="run a protocol and write a record")
    run.add_argument("--protocol", required=True, help="knn, ... (`bench list protocols`)")
    run.add_argument("--preset", help="preset from protocols/<protocol>.yaml (default: the file's default)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field (repeatable)")
    run.add_argument("--features", help="folder with <split>.npz feature files instead of a backbone")
    run.add_argument("--out", default="results", help="results folder; the record goes to OUT/runs/")
    run.add_argument("--quick", action="store_true", help="smoke run: fewer epochs; never comparable to papers")
    run.add_argument("--force", action="store_true", help="re-run even if the record exists")
    _add_backbone_args(run)
    _add_data_args(run, default_dataset=None)

    ext = sub.add_parser("extract", help="extract features to DIR/<split>.npz + meta.json")
    ext.add_argument("--split", default="train,val", help="comma-separated splits (default train,val)")
    ext.add_argument("--out", required=True, help="output folder")
    ext.add_argument("--resize", type=int, default=256)
    ext.add_argument("--crop", type=int, default=224)
    ext.add_argument("--interpolation", default="bicubic")
    _add_backbone_args(ext)
    _add_data_args(ext)

    data = sub.add_parser("data", help="dataset utilities")
    dsub = data.add_subparsers(dest="data_verb", required=True, metavar="ACTION")
    mini = dsub.add_parser("mini", help="write the miniature datasets in their real layouts")
    mini.add_argument("--root", required=True)
    mini.add_argument("--only", help="comma-separated dataset folders (default all)")
    mini.add_argument("--overwrite", action="store_true")

    lst = sub.add_parser("list", help="list protocols, presets, datasets, feature modes or layouts")
    lst.add_argument("what", choices=["protocols", "presets", "datasets", "feature-modes", "layouts", "minis"])
    return parser


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_backbone_from_args(args):
    from .backbones import load_backbone
    if args.ckpt:
        return load_backbone(args.ckpt, args.arch or args.model, ckpt_key=args.ckpt_key,
                             allow_partial=args.allow_partial, trust_checkpoint=args.trust_checkpoint, seed=args.seed)
    if args.arch and args.model and args.arch != args.model:
        raise _bench_error()(f"--model {args.model} and --arch {args.arch} disagree; give one")
    return load_backbone(None, args.model or args.arch, seed=args.seed)


def _bench_error():
    from .errors import BenchError
    return BenchError


def _context(args, dataset: str, backbone, features_dir=None, options=None):
    from .data import cache_dir, resolve_data_root
    from .runner import RunContext
    device = _device(args.device)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if device.type == "cuda"
                                                             else 0)
    data_root = resolve_data_root(args.data_root) if features_dir is None or args.data_root else None
    return RunContext(dataset=dataset, data_root=data_root, backbone=backbone,
                      features_dir=Path(features_dir) if features_dir else None, feature_mode=args.feature_mode,
                      resolution=args.resolution, device=device, batch_size=args.batch_size, workers=workers,
                      cache_dir=None if args.no_cache else Path(args.cache_dir or cache_dir()), amp=args.amp,
                      seed=args.seed, quick=getattr(args, "quick", False), options=options or {})


def _cmd_run(args, extra: list[str]) -> int:
    from .errors import BenchError
    from .presets import parse_overrides
    from .protocols import get_protocol
    from .runner import run_protocol
    spec = get_protocol(args.protocol)
    options = {}
    if spec.add_arguments:
        p = argparse.ArgumentParser(prog=f"bench run --protocol {spec.name}")
        spec.add_arguments(p)
        opts = p.parse_args(extra)
        options = spec.options(opts) if spec.options else vars(opts)
    elif extra:
        raise BenchError(f"unrecognized arguments for protocol {spec.name}: {' '.join(extra)}")
    if args.features and (args.ckpt or args.model):
        raise BenchError("give either --features or a backbone (--model/--ckpt), not both")
    if args.features and not Path(args.features).is_dir():
        raise BenchError(f"{args.features}: --features folder not found")
    backbone = None if args.features else _load_backbone_from_args(args)
    ctx = _context(args, args.dataset or spec.default_dataset, backbone, args.features, options)
    record, path, reused = run_protocol(args.protocol, ctx, preset=args.preset, overrides=parse_overrides(args.set),
                                        out_dir=args.out, force=args.force)
    _print_record(record, path, reused)
    return 0


def _print_record(rec: dict, path: Path, reused: bool) -> None:
    ck = rec["checkpoint"]
    who = f"{ck['arch']} ({ck['name']})" if ck.get("arch") else ck["name"]
    data = rec["dataset"]["name"] + (" [miniature]" if rec["dataset"]["mini"] else "")
    print(f"{rec['protocol']} · preset {rec['preset']} · {who} · {data} · {rec['wall_time_s']:.1f} s")
    metrics = rec["metrics"]
    order = list(rec.get("headline") or []) + sorted(k for k in metrics if k not in (rec.get("headline") or []))
    width = max(len(k) for k in order)
    for k in order:
        print(f"  {k:<{width}}  {metrics[k]:8.2f}")
    if not rec["comparable"]:
        print(f"  not comparable with the papers: {'; '.join(rec['not_comparable_because'])}")
    print(f"record {'exists (use --force to re-run)' if reused else 'written'}: {path}")


def _cmd_extract(args) -> int:
    from ._io import atomic_write_json
    from .cache import extract_features, save_feature_split
    from .data import TransformSpec, build_eval_transform
    backbone = _load_backbone_from_args(args)
    ctx = _context(args, args.dataset, backbone)
    spec = ctx.transform_spec({"resize": args.resize, "crop": args.crop, "interpolation": args.interpolation})
    mode = ctx.resolve_feature_mode(None)
    out = Path(args.out)
    counts = {}
    for split in [s for s in args.split.split(",") if s]:
        images = ctx.open_images(split, build_eval_transform(spec))
        fs = extract_features(backbone, images, split=split, dataset_name=args.dataset, feature_mode=mode,
                              transform=spec.to_dict(), data_root=str(ctx.data_root.path), cache_dir=ctx.cache_dir,
                              batch_size=args.batch_size, workers=ctx.workers, device=ctx.device, amp=args.amp)
        save_feature_split(out, split, fs)
        counts[split] = len(fs)
        print(f"{split}: {fs.features.shape[0]} × {fs.features.shape[1]} → {out / (split + '.npz')}"
              f"{' (cache)' if fs.meta['cache_hit'] else ''}")
    rep = backbone.report
    atomic_write_json(out / "meta.json", {
        "checkpoint": rep.source, "checkpoint_sha256": rep.sha256, "arch": rep.arch, "family": rep.family,
        "feature_mode": mode, "transform": spec.to_dict(), "dataset": args.dataset,
        "data_root": str(ctx.data_root.path), "mini": ctx.mini, "counts": counts, "amp": args.amp})
    _ = TransformSpec
    return 0


def _cmd_data(args) -> int:
    from .data.mini import write_minis
    names = [n for n in (args.only or "").split(",") if n] or None
    written = write_minis(Path(args.root), names, overwrite=args.overwrite)
    print(f"miniatures in {args.root}: wrote {', '.join(written) if written else 'nothing (all present)'}")
    return 0


def _cmd_list(args) -> int:
    from .backbones.features import FEATURE_MODES
    from .backbones.layouts import LAYOUTS
    from .data import DATASETS
    from .data.mini import MINI_WRITERS
    from .presets import load_protocol_yaml
    from .protocols import get_protocol, list_protocols
    if args.what == "protocols":
        for name in list_protocols():
            print(f"{name:14s} {get_protocol(name).description}")
    elif args.what == "presets":
        for name in list_protocols():
            data = load_protocol_yaml(name)
            for preset, body in sorted(data["presets"].items()):
                mark = "*" if preset == data.get("default") else " "
                print(f"{name:14s}{mark}{preset:12s} {(body or {}).get('source', '')}")
    else:
        reg = {"datasets": DATASETS, "feature-modes": FEATURE_MODES, "layouts": LAYOUTS, "minis": MINI_WRITERS}
        print("\n".join(reg[args.what].names()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .errors import BenchError
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.verb != "run":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        if args.verb == "run":
            return _cmd_run(args, extra)
        return {"extract": _cmd_extract, "data": _cmd_data, "list": _cmd_list}[args.verb](args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished records and cache entries are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
