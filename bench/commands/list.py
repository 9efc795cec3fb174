"""bench list WHAT: the registries (protocols, presets, datasets, feature modes, layouts, miniatures)."""
from __future__ import annotations

import argparse

HELP = "list protocols, presets, checkpoints (--ckpt NAME), datasets, feature modes, layouts or miniatures"


def add_parser(sub) -> argparse.ArgumentParser:
    lst = sub.add_parser("list", help=HELP)
    lst.add_argument("what", nargs="?", choices=WHAT, help="what to list (default: everything, one section each)")
    return lst


WHAT = ["protocols", "presets", "checkpoints", "datasets", "feature-modes", "layouts", "minis"]


def preset_lines(protocol: str) -> list[str]:
    """One line per preset of `protocol`: name (* = default), version, the paper's code it follows."""
    from ..presets import load_protocol_yaml, preset_version
    data = load_protocol_yaml(protocol)
    out = []
    for preset, body in sorted(data["presets"].items()):
        mark = "*" if preset == data.get("default") else " "
        paper, source = (" ".join(str((body or {}).get(k, "")).split()) for k in ("paper", "source"))
        cite = f"{paper} [{source}]" if paper and source else paper or source
        out.append(f"{protocol:14s}{mark}{preset:16s} v{preset_version(protocol, preset):<3d} {cite}")
    return out


def run(args) -> int:
    if args.what is None:
        for i, what in enumerate(WHAT):
            print(f"{'' if i == 0 else chr(10)}{what} (bench list {what}):")
            _list(what)
        return 0
    return _list(args.what)


def _list(what: str) -> int:
    # Each branch imports only what it lists: presets and layouts need no torch, so they answer at once.
    if what == "protocols":
        from ..protocols import protocol_summaries
        for name, description in protocol_summaries().items():
            print(f"{name:14s} {description}")
    elif what == "presets":
        from ..presets import presets_dir
        for name in sorted(p.stem for p in presets_dir().glob("*.yaml")):
            print("\n".join(preset_lines(name)))
    elif what == "checkpoints":
        from ..backbones.zoo import load_registry
        for name, entry in load_registry().items():
            where = entry.url or entry.path or "no direct URL (checkpoints.yaml: how_to_get)"
            print(f"{name:28s} {entry.arch or '-':28s} {where}")
    else:
        if what == "datasets":
            from ..data import DATASETS as reg
        elif what == "feature-modes":
            from ..backbones.features import FEATURE_MODES as reg
        elif what == "layouts":
            # list_layouts() imports the module that registers them; the bare registry is empty until then
            from ..backbones.layouts import list_layouts
            for layout in list_layouts():
                print(f"{layout.name:20s} {layout.doc}".rstrip())
            return 0
        else:
            from ..data.mini import MINI_WRITERS as reg
        print("\n".join(reg.names()))
    return 0
