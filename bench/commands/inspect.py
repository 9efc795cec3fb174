"""bench inspect: what a checkpoint holds and how it loads — family, arch, coverage, dropped groups, extras."""
from __future__ import annotations

import argparse
import json

HELP = "show a checkpoint's family, arch, coverage, dropped groups and preprocessing"


def add_file_args(p: argparse.ArgumentParser) -> None:
    """The checkpoint arguments `inspect` and `convert` share."""
    p.add_argument("file", help="checkpoint file or a checkpoints.yaml name")
    p.add_argument("--arch", help="architecture (default: inferred from the keys and shapes; `from-keys`: also a "
                                  "shape no one published)")
    p.add_argument("--ckpt-key", help="sub-model to read, e.g. teacher or student")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling (executes code in the file; trusted files only)")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("inspect", help=HELP, description=HELP)
    add_file_args(p)
    p.add_argument("--allow-partial", action="store_true", help="report an incomplete load instead of failing")
    p.add_argument("--json", action="store_true", help="print the load report as JSON")
    from ._common import add_pos_embed_rule_arg
    add_pos_embed_rule_arg(p)
    return p


def _global_status(name: str, rep: dict) -> str:
    """How a pickle global of the file was handled: allowlisted (safe load), stubbed or imported (trusted load)."""
    from ..backbones._safe_load import safe_global_names
    if name in (rep.get("stubbed_globals") or ()):
        return "stubbed: not importable here, --trust-checkpoint"
    if name in safe_global_names():
        return "allowlisted"
    return "imported: --trust-checkpoint"


def _lines(rep: dict) -> list[str]:
    pre = rep["preprocessing"]
    beyond = rep["extra_objects"] + [f"pickle global {g} ({_global_status(g, rep)})" for g in rep["pickle_globals"]]
    lines = [
        f"file:          {rep['source']}" + (f"  [{rep['registry_name']}]" if rep["registry_name"] else ""),
        f"sha256:        {rep['sha256']}",
        f"layout:        {rep['layout']}" + (f"  (ckpt key: {rep['ckpt_key']})" if rep["ckpt_key"] else ""),
        f"family:        {rep['family']}",
        f"arch:          {rep['arch']} ({rep['library']})"
        + (f"  {json.dumps(rep['model_kwargs'], sort_keys=True)}" if rep["model_kwargs"] else ""),
        f"coverage:      {rep['coverage']:.1%} ({rep['n_loaded']}/{rep['n_expected']} backbone tensors)",
        f"missing:       {', '.join(rep['missing'][:5]) or '-'}",
        f"unexpected:    {', '.join(rep['unexpected'][:5]) or '-'}",
        "dropped:       " + ("\n               ".join(
            f"{g} ({n}): {', '.join(rep['dropped_keys'].get(g, []))}{', ...' if n > 5 else ''}"
            for g, n in rep["dropped"].items()) or "-"),
        f"preprocessing: mean {tuple(pre['mean'])} std {tuple(pre['std'])} {pre['interpolation']}",
        f"feature mode:  {rep['feature_mode']}",
        f"non-tensors:   {', '.join(beyond) or 'none (plain tensors only)'}",
    ]
    return lines + [f"note:          {n}" for n in rep["notes"]]


def run(args) -> int:
    from ..backbones import load_backbone
    bb = load_backbone(args.file, args.arch, ckpt_key=args.ckpt_key, allow_partial=args.allow_partial,
                       trust_checkpoint=args.trust_checkpoint, pos_embed_rule=args.pos_embed_rule)
    rep = bb.report.to_dict()
    print(json.dumps(rep, indent=2, sort_keys=True) if args.json else "\n".join(_lines(rep)))
    return 0
