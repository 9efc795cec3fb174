"""bench run --protocol P: one protocol on one backbone (or feature folder), one record."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._argtypes import POSITIVE_INT
from ..errors import BenchError
from ..launch import add_launcher_args
from ._common import add_backbone_args, add_data_args, check_run_args, load_backbone_from_args, make_context

HELP = "run a protocol and write a record"


_PARSER: argparse.ArgumentParser | None = None


def add_parser(sub) -> argparse.ArgumentParser:
    global _PARSER
    run = _PARSER = sub.add_parser("run", help=HELP, epilog="bench run --protocol P --help adds P's own flags and "
                                                               "presets")
    run.add_argument("--protocol", required=True, help="knn, ... (`bench list protocols`)")
    run.add_argument("--preset", help="preset from protocols/<protocol>.yaml (default: the file's default)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field (repeatable)")
    run.add_argument("--features", help="folder with <split>.npz feature files instead of a backbone")
    run.add_argument("--out", help="results folder; the record goes to OUT/runs/ (default: ./results, or "
                                   "results/local/ in bench's repository, whose results/ is the committed leaderboard)")
    run.add_argument("--quick", action="store_true", help="smoke run: fewer epochs; never comparable to papers")
    run.add_argument("--force", action="store_true", help="re-run even if the record exists")
    run.add_argument("--seeds", type=POSITIVE_INT, default=1, metavar="N",
                     help="training protocols: N runs with seeds SEED … SEED+N-1 in one record (mean ± std; the "
                          "features cache is shared); detection's --trials N is the same")
    run.add_argument("--ckpt-meta", action="append", metavar="KEY=VALUE",
                     help="pre-training setting of the checkpoint (momentum=0.99, mlp=yes, temperature=0.2, "
                          "stop_grad=no, epochs=200, ...; repeatable; overrides checkpoints.yaml pretrain:). "
                          "Ablation tables compare a row only with the paper's row of the same setting")
    add_backbone_args(run)
    add_data_args(run, default_dataset=None)
    add_launcher_args(run)
    return run


ACCEPTS_EXTRA = True  # protocol-specific flags are parsed by the protocol's own add_arguments


def print_help(argv: list[str]) -> int:
    """`bench run [--protocol P] --help`: the common flags, then P's own flags (parsed in a second pass, so
    argparse alone would never show them) and P's presets."""
    protocol = next((a.split("=", 1)[1] for a in argv if a.startswith("--protocol=")), None)
    if protocol is None and "--protocol" in argv[:-1]:
        protocol = argv[argv.index("--protocol") + 1]
    _PARSER.print_help()
    if protocol is None:
        return 0
    from ..protocols import get_protocol
    from .list import preset_lines
    spec = get_protocol(protocol)
    print(f"\nprotocol {spec.name}: {spec.description}")
    if spec.add_arguments:
        p = argparse.ArgumentParser(prog=f"bench run --protocol {spec.name}", add_help=False)
        spec.add_arguments(p)
        print(f"\n{spec.name} options:")
        print(p.format_help().split("\n\n", 1)[-1].split("\n", 1)[-1].rstrip())
    print(f"\n{spec.name} presets (* = default; --preset NAME, fields in protocols/{spec.name}.yaml):")
    print("\n".join("  " + line[14:] for line in preset_lines(spec.name)))
    return 0


def run(args, extra: list[str]) -> int:
    if args.launcher != "none":
        from ..launch import submit
        return submit(args.argv, args)
    if args.out is None:
        from .._results_dir import default_results
        args.out = str(default_results())
    check_run_args(args)
    from ..presets import parse_overrides, resolve_preset
    from ..protocols import get_protocol
    from ..runner import run_protocol
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
    # everything that can be refused is refused before the backbone is built (which may train or download it):
    # the preset and its --set values, --ckpt-meta, the data root and its layout
    overrides = parse_overrides(args.set)
    resolve_preset(spec.name, spec.preset_cls, args.preset, overrides)
    ckpt_meta = parse_ckpt_meta(args.ckpt_meta)
    seeds = _seeds(args, options)
    from .. import distributed as dd
    pair = not (args.features or args.ckpt or args.model or args.arch)
    runs = _default_pair() if pair else [(args.ckpt, args.model)]
    records = []
    for ckpt, model in runs:
        args.ckpt, args.model = ckpt, model
        ctx = make_context(args, args.dataset or spec.default_dataset, None, args.features, options)
        ctx.ckpt_meta = ckpt_meta
        ctx.seeds = seeds
        if ctx.data_root is not None:
            from ..data.datasets import check_layout
            check_layout(ctx.dataset, ctx.data_root.path, mini=ctx.mini)
        ctx.backbone = None if args.features else load_backbone_from_args(args)
        record, path, reused = run_protocol(args.protocol, ctx, preset=args.preset, overrides=overrides,
                                            out_dir=args.out, force=args.force)
        records.append(record)
        if dd.is_main():
            _print_record(record, path, reused)
            if pair and len(records) == 1:
                print()
    if pair and dd.is_main():
        print(f"\nsummary: {_summary(records)}")
    return 0


def _seeds(args, options: dict) -> int:
    """--seeds N; detection runs its seeds itself (its --trials, kept as an alias), so N goes to its option."""
    if "trials" in options:
        if args.seeds > 1 and options["trials"] > 1 and options["trials"] != args.seeds:
            raise BenchError(f"--seeds {args.seeds} and --trials {options['trials']} disagree; give one of them")
        options["trials"] = max(options["trials"], args.seeds)
        return 1
    return args.seeds


# `bench run --protocol P` with no backbone: bench's packaged reference checkpoint beside a random model of the same
# architecture, so the first number a newcomer sees means something
DEFAULT_REFERENCE = "mini_mocov2_test_resnet"


def _default_pair() -> list[tuple[str | None, str | None]]:
    from ..backbones.zoo import get_entry
    entry = get_entry(DEFAULT_REFERENCE)
    if entry is None or not entry.arch:
        raise BenchError(f"checkpoints.yaml has no {DEFAULT_REFERENCE} (with its arch), the default backbone; give "
                         f"--model NAME or --ckpt FILE")
    return [(DEFAULT_REFERENCE, None), (None, entry.arch)]


def _summary(records: list[dict]) -> str:
    """'knn top1 on imagenet [miniature]: mini_mocov2_test_resnet 47.2 · random test_resnet 25.6'."""
    first = records[0]
    metric = (first.get("headline") or sorted(first["metrics"]))[0]
    data = first["dataset"]["name"] + (" [miniature]" if first["dataset"]["mini"] else "")
    parts = []
    for rec in records:
        ck = rec["checkpoint"]
        who = f"random {ck['arch']}" if ck.get("family") == "random" else ck.get("registry_name") or ck["name"]
        parts.append(f"{who} {rec['metrics'][metric]:.1f}")
    return f"{first['protocol']} {metric} on {data}: " + " · ".join(parts)


def parse_ckpt_meta(items: list[str] | None) -> dict:
    """--ckpt-meta KEY=VALUE pairs → {key: value}, values read as YAML scalars (0.99, yes, 200, nce)."""
    import yaml
    from ..backbones.zoo import check_pretrain
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BenchError(f"--ckpt-meta {item!r}: expected KEY=VALUE, e.g. --ckpt-meta momentum=0.99")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return check_pretrain(out, "--ckpt-meta")


def _print_record(rec: dict, path: Path, reused: bool) -> None:
    ck = rec["checkpoint"]
    who = f"{ck['arch']} ({ck['name']})" if ck.get("arch") else ck["name"]
    data = rec["dataset"]["name"] + (" [miniature]" if rec["dataset"]["mini"] else "")
    took = "" if reused else f" · {rec['wall_time_s']:.1f} s"
    print(f"{rec['protocol']} · preset {rec['preset']} · {who} · {data}{took}")
    metrics = rec["metrics"]
    order = list(rec.get("headline") or []) + sorted(k for k in metrics if k not in (rec.get("headline") or []))
    width = max(len(k) for k in order)
    for k in order:
        iv = (rec.get("intervals") or {}).get(k)
        spread = ((rec.get("seeds") or {}).get("std") or {}).get(k)
        print(f"  {k:<{width}}  {metrics[k]:8.2f}" + (f"  95% CI [{iv['lo']:.2f}, {iv['hi']:.2f}]" if iv else "")
              + (f"  std over {len(rec['seeds']['seeds'])} seeds {spread:.2f}" if spread is not None else ""))
    if not rec["comparable"]:
        print(f"  not comparable with the papers: {'; '.join(rec['not_comparable_because'])}")
    if reused:
        print(f"record exists: {path}")
        print(f"  these numbers were NOT re-measured now: {measured_where(rec)}; add --force to re-measure them here")
    else:
        print(f"record written: {path}")


def measured_where(rec: dict) -> str:
    """When and on what a record's numbers were measured, from its own `created` and `environment`."""
    env = rec.get("environment") or {}
    when = str(rec.get("created") or "at an unrecorded time").replace("T", " ").replace("+00:00", " UTC")
    machine = ", ".join(str(x) for x in (env.get("gpu") or env.get("device"), env.get("platform"),
                                         env.get("torch") and f"torch {env['torch']}",
                                         env.get("git_commit") and f"bench {str(env['git_commit'])[:10]}") if x)
    return f"measured {when} on {machine or 'an unrecorded machine'}"
