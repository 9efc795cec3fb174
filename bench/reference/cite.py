"""BibTeX for a preset: the entries of citations.yaml whose patterns find the preset's `paper:` field."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

from ..errors import BenchError

__all__ = ["citations", "cite_paper", "cite_presets", "BENCH_BIBTEX"]

CITATIONS_PATH = Path(__file__).resolve().parent / "citations.yaml"

BENCH_BIBTEX = """@software{bench,
  title  = {bench: evaluation of self-supervised visual representations as the papers ran it},
  author = {{bench developers}},
  year   = {2026},
  note   = {Cite the papers of the protocols you ran as well: bench cite --preset NAME}
}
"""


@functools.lru_cache(maxsize=None)
def citations() -> dict[str, dict]:
    try:
        data = yaml.safe_load(CITATIONS_PATH.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise BenchError(f"{CITATIONS_PATH}: unreadable citations ({e}); reinstall bench") from e
    return {k: {"match": [re.compile(p) for p in v["match"]], "bibtex": v["bibtex"]} for k, v in data.items()}


def cite_paper(paper: str) -> list[str]:
    """Keys of the entries a preset's `paper:` text names, in citations.yaml order."""
    return [key for key, e in citations().items() if any(p.search(paper or "") for p in e["match"])]


def cite_presets(preset: str, protocol: str | None = None) -> list[tuple[str, str, list[str]]]:
    """(protocol, paper text, citation keys) of every preset named `preset` (in `protocol` only, when given)."""
    from ..presets import load_protocol_yaml, presets_dir
    protocols = [protocol] if protocol else sorted(p.stem for p in presets_dir().glob("*.yaml"))
    found = []
    for proto in protocols:
        body = load_protocol_yaml(proto)["presets"].get(preset)
        if body is not None:
            paper = str((body or {}).get("paper", ""))
            found.append((proto, paper, cite_paper(paper)))
    if not found:
        where = f"protocol {protocol}" if protocol else "any protocol"
        raise BenchError(f"--preset {preset}: no such preset in {where}; see `bench list presets`")
    return found
