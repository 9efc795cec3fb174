"""Method and source names a reader understands: "BYOL [23]", "BYOL [30]" and "BYOL" are one method; "Ours" is the
method of the paper whose table prints it; `dinov2_readme` is "DINOv2 (Oquab et al. 2024)".

Display only: which documented row a measured row is compared with stays `canonical_method`'s business.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from . import Documented, canonical_method, reference_mapping

__all__ = ["strip_citation", "resolve_ours", "method_names", "display_method", "source_label"]

# numbered marks, author-year parentheses and the paper's own "(ours)"
_CITATION = re.compile(r"\s*(?:\[[^\]]*\]|\([^()]*(?:\bet al\b|\b(?:19|20)\d\d[a-z]?\b)[^()]*\)|\(ours\))", re.I)
_OURS = re.compile(r"^\s*(?:\(\w\)\s*)?ours\b", re.I)


def strip_citation(label: str) -> str:
    """'BYOL [23]' → 'BYOL'; 'DINO (Caron et al., 2021)' → 'DINO'; 'SimCLR (ours)' → 'SimCLR'."""
    return " ".join(_CITATION.sub("", label).split())


def resolve_ours(label: str, table: str) -> str:
    """'Ours' / 'Ours (bigger AlexNet)' in `table` → its paper's method ('InstDisc (bigger AlexNet)'), from
    mapping.yaml `ours`; any other label unchanged."""
    method = reference_mapping()["ours"].get(table)
    if not method or not _OURS.match(label):
        return label
    rest = _OURS.sub("", label, count=1).strip()
    return f"{method} {rest}".strip()


def method_names(documented: Iterable[Documented]) -> dict[str, str]:
    """canonical method → the spelling most papers print (citation marks dropped; ties: alphabetical)."""
    spellings: dict[str, Counter] = {}
    for d in documented:
        label = strip_citation(resolve_ours(d.method, d.table))
        key = canonical_method(label)
        if key:
            spellings.setdefault(key, Counter())[label] += 1
    return {k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k, c in spellings.items()}


def display_method(label: str, table: str | None, names: dict[str, str]) -> str:
    """The name a row's method is shown (and filtered) under."""
    label = strip_citation(resolve_ours(label, table) if table else label)
    key = canonical_method(label)
    return names.get(key, label) if key else label


def source_label(table: str, paper: str) -> str:
    """'dinov2_readme', 'Oquab et al. "DINOv2: ..." TMLR 2024.' → 'Oquab et al. 2024 (DINOv2 README)'."""
    authors = paper.split('"')[0].strip().rstrip(".").strip()
    year = re.findall(r"\b(?:19|20)\d\d\b", paper)
    who = f"{authors} {year[-1]}" if authors and year else authors or table
    return f"{who} ({table.replace('_', ' ')})"
