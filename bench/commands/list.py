"""bench list WHAT: the registries (protocols, presets, datasets, feature modes, layouts, miniatures)."""
from __future__ import annotations

import argparse

HELP = "list protocols, presets, datasets, feature modes, layouts or miniatures"


def add_parser(sub) -> argparse.ArgumentParser:
    lst = sub.add_parser("list", help=HELP)
    lst.add_argument("what", choices=["protocols", "presets", "datasets", "feature-modes", "layouts", "minis"])
    return lst


def run(args) -> int:
    from ..backbones.features import FEATURE_MODES
    from ..backbones.layouts import LAYOUTS
    from ..data import DATASETS
    from ..data.mini import MINI_WRITERS
    from ..presets import load_protocol_yaml
    from ..protocols import get_protocol, list_protocols
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


