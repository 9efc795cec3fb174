"""Which documented rows of each reference table a registered checkpoint can measure (`bench table --coverage`).

A documented row is a (method, arch) of a reference table (bench/reference/data/). It is *covered* by a
checkpoints.yaml entry that cites it (a `numbers` item naming that table, method and arch) or whose method meets it
as the leaderboards match rows (`method`, else `family`, through `canonical_method`; the arch through
`arch_matches`). A covering entry *loads* when it has a direct download (or a local `path`), a layout and family
this bench knows, and an arch timm or torchvision builds; otherwise the row says what is missing. Rows with no
entry say why when checkpoints.yaml lists the system under `no_public_checkpoint:`.

Reads checkpoints.yaml and the reference tables only: no record, no network, no checkpoint file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

__all__ = ["RowCoverage", "entry_problems", "coverage_rows", "render_coverage", "registered_for"]

LOADS, REGISTERED, UNAVAILABLE, NONE = "loads", "registered", "no public checkpoint", "not registered"


@dataclass(frozen=True)
class RowCoverage:
    table: str
    method: str
    arch: str
    status: str                    # LOADS, REGISTERED, UNAVAILABLE or NONE
    checkpoints: tuple[str, ...]   # the covering entries (those that load first)
    why: str                       # what keeps a registered row from loading, or why there is no checkpoint


def _buildable(arch: str) -> bool:
    import timm
    import torchvision
    from .backbones._build import split_arch
    from .backbones._deepcluster import DEEPCLUSTER_ARCHS
    library, name = split_arch(arch)
    if library == "torchvision":
        return name in torchvision.models.list_models()
    return timm.is_model(name) or name in torchvision.models.list_models() or name in DEEPCLUSTER_ARCHS


def entry_problems(entry) -> list[str]:
    """What keeps a registry entry from loading in this bench (empty: it loads)."""
    from .backbones.families import FAMILIES
    from .backbones.layouts import list_layouts
    out = []
    if not (entry.url or entry.path):
        out.append("no direct download (checkpoints.yaml how_to_get)")
    if entry.layout is None:
        out.append("layout not verified")
    elif entry.layout not in {lay.name for lay in list_layouts()}:
        out.append(f"layout {entry.layout} not in this bench")
    if entry.family and entry.family not in FAMILIES.names():
        out.append(f"family {entry.family} not in this bench")
    if not entry.arch:
        out.append("no timm/torchvision arch")
    elif not _buildable(entry.arch):
        out.append(f"arch {entry.arch} not buildable")
    return out


def _cites_item(n: dict, table: str, method: str, arch: str) -> bool:
    return n.get("table") == f"{table}.csv" and n.get("method") == method and n.get("arch", arch) == arch


def _cites(entry, table: str, method: str, arch: str) -> bool:
    return any(_cites_item(n, table, method, arch) for n in entry.numbers)


def _method_meets(label: str | None, arch_of: str | None, method: str, arch: str) -> bool:
    from .reference import arch_matches, canonical_method
    mine, theirs = canonical_method(label), canonical_method(method)
    return bool(mine) and mine == theirs and arch_matches(arch, arch_of)


def _unavailable_for(items, table: str, method: str, arch: str):
    from .reference import canonical_arch, canonical_method
    for u in items:
        if canonical_method(u.method) != canonical_method(method) or (u.tables and table not in u.tables):
            continue
        if u.arch is None or canonical_arch(u.arch) == canonical_arch(arch):
            return u
    return None


def registered_for(table: str, method: str, arch: str, values: Iterable[str], setting: str = "") -> str:
    """The checkpoints.yaml entries whose `numbers` cite this documented row (table, method, arch, one of its
    printed `values`, and the item's `setting` text if it gives one: rows that differ only in setting, like iBOT's
    IN-1K and IN-22K ViT-L or DeiT's ablation rows, stay apart), space-separated: the leaderboards' checkpoint cell
    of a documented row. Reads checkpoints.yaml only."""
    from .backbones.zoo import load_registry
    printed = {_number(v) for v in values} - {None}
    return " ".join(e.name for e in load_registry().values()
                    if any(_cites_item(n, table, method, arch) and _number(n.get("value")) in printed
                           and str(n.get("setting", "")) in setting for n in e.numbers))


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def coverage_rows(registry: dict | None = None, unavailable: tuple | None = None) -> list[RowCoverage]:
    """One RowCoverage per documented (method, arch) of every reference table, in index.csv and row order."""
    from .backbones.zoo import MINI_SCHEME, load_registry, load_unavailable
    from .reference import reference_index, reference_table
    registry = load_registry() if registry is None else registry
    unavailable = load_unavailable() if unavailable is None else unavailable
    entries = [e for e in registry.values() if not (e.url or "").startswith(MINI_SCHEME)]
    problems = {e.name: entry_problems(e) for e in entries}
    out = []
    for info in reference_index():
        table = info["file"].removesuffix(".csv")
        for method, arch in dict.fromkeys((r["method"], r["arch"]) for r in reference_table(table)):
            cited = {e.name for e in entries if _cites(e, table, method, arch)}
            hits = [e for e in entries if e.name in cited or _method_meets(e.method or e.family, e.arch, method, arch)]
            hits.sort(key=lambda e: (bool(problems[e.name]), e.name not in cited, e.name))
            u = _unavailable_for(unavailable, table, method, arch)
            if not hits:
                out.append(RowCoverage(table, method, arch, UNAVAILABLE if u else NONE, (), u.reason if u else ""))
                continue
            ok = not problems[hits[0].name]
            # a method-only match may be another release of the method (a re-implementation): its notes say so
            why = [f"{e.name}: {', '.join(problems[e.name])}" for e in hits if problems[e.name]]
            why += [f"{e.name}: {e.notes}" for e in hits if e.name not in cited and e.notes and not problems[e.name]]
            out.append(RowCoverage(table, method, arch, LOADS if ok else REGISTERED, tuple(e.name for e in hits),
                                   "; ".join(why + ([u.reason] if u else []))))
    return out


def render_coverage(rows: list[RowCoverage]) -> str:
    """Markdown: a summary line per reference table, then its rows."""
    from .reference import _md
    lines = ["# Checkpoint coverage of the reference tables", "",
             "Each documented (method, arch) row and the checkpoints.yaml entries that measure it: `loads` = a "
             "registered checkpoint with a direct download, a layout, family and arch this bench knows; "
             "`registered` = an entry exists, and `why` says what it lacks; `no public checkpoint` = "
             "checkpoints.yaml `no_public_checkpoint:` says why; `not registered` = no entry.", ""]
    tables = list(dict.fromkeys(r.table for r in rows))
    lines += ["| reference table | rows | loads | registered | no public checkpoint | not registered |",
              "|---|---|---|---|---|---|"]
    for t in tables:
        mine = [r for r in rows if r.table == t]
        counts = [sum(r.status == s for r in mine) for s in (LOADS, REGISTERED, UNAVAILABLE, NONE)]
        lines.append(f"| `{t}` | {len(mine)} | " + " | ".join(map(str, counts)) + " |")
    for t in tables:
        lines += ["", f"## {t}", "", "| method | arch | status | checkpoints | why |", "|---|---|---|---|---|"]
        lines += [f"| {_md(r.method)} | {_md(r.arch)} | {r.status} | {', '.join(r.checkpoints)} | {_md(r.why)} |"
                  for r in rows if r.table == t]
    return "\n".join(lines) + "\n"
