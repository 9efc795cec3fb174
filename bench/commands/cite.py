"""bench cite [--preset NAME [--protocol P]]: BibTeX of the paper(s) whose protocol a preset follows, or of bench."""
from __future__ import annotations

import argparse

HELP = "print BibTeX: of the paper(s) a preset follows (--preset), or of bench itself"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cite", help=HELP)
    p.add_argument("--preset", help="preset name (every protocol that has it, unless --protocol)")
    p.add_argument("--protocol", help="only this protocol's preset")
    return p


def run(args) -> int:
    from ..errors import BenchError
    from ..reference.cite import BENCH_BIBTEX, cite_presets, citations
    if not args.preset:
        print(BENCH_BIBTEX, end="")
        return 0
    printed = set()
    for protocol, paper, keys in cite_presets(args.preset, args.protocol):
        if not keys:
            raise BenchError(f"{protocol}/{args.preset}: no BibTeX for its paper {paper!r}; add it to "
                             f"bench/reference/citations.yaml")
        print(f"% {protocol}/{args.preset}: {paper}")
        for key in keys:
            print(citations()[key]["bibtex"] if key not in printed else f"% (see {key} above)\n")
            printed.add(key)
    return 0
