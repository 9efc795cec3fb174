"""bench list WHAT: the registries (protocols, presets, datasets, feature modes, layouts, miniatures)."""
from __future__ import annotations

import argparse

HELP = "list protocols, presets, checkpoints (--ckpt NAME), datasets, feature modes, layouts or miniatures"


def add_parser(sub) -> argparse.ArgumentParser:
    lst = sub.add_parser("list", help=HELP)
    lst.add_argument("what", choices=["protocols", "presets", "checkpoints", "datasets", "feature-modes", "layouts",
                                        "minis"])
    return lst


def run(args) -> int:
    # Each branch imports only what it lists: presets and layouts need no torch, so they answer at once.
    if args.what == "protocols":
        from ..protocols import get_protocol, list_protocols
        for name in list_protocols():
            print(f"{name:14s} {get_protocol(name).description}")
    elif args.what == "presets":
        from ..presets import load_protocol_yaml, preset_version, presets_dir
        for name in sorted(p.stem for p in presets_dir().glob("*.yaml")):
            data = load_protocol_yaml(name)
            for preset, body in sorted(data["presets"].items()):
                mark = "*" if preset == data.get("default") else " "
                source = " ".join(str((body or {}).get("source", "")).split())
                print(f"{name:14s}{mark}{preset:16s} v{preset_version(name, preset):<3d} {source}")
    elif args.what == "checkpoints":
        from ..backbones.zoo import load_registry
        for name, entry in load_registry().items():
            where = entry.url or "no direct URL (checkpoints.yaml: how_to_get)"
            print(f"{name:28s} {entry.arch:28s} {where}")
    else:
        if args.what == "datasets":
            from ..data import DATASETS as reg
        elif args.what == "feature-modes":
            from ..backbones.features import FEATURE_MODES as reg
        elif args.what == "layouts":
            # list_layouts() imports the module that registers them; the bare registry is empty until then
            from ..backbones.layouts import list_layouts
            for layout in list_layouts():
                print(f"{layout.name:20s} {layout.doc}".rstrip())
            return 0
        else:
            from ..data.mini import MINI_WRITERS as reg
        print("\n".join(reg.names()))
    return 0
