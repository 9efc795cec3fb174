"""`bench compare --write`: a comparison as RESULTS/compare/<name>.json + .md, and RESULTS/compare/index.md over all
of them (what `bench site` shows). Everything is sorted and rounded, so rewriting gives the same bytes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._io import atomic_write_json, atomic_write_text
from ._text import md_escape as _md
from ._text import safe_name

__all__ = ["write_comparison", "comparison_files", "comparison_markdown", "index_markdown"]


def _stored(c: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    return {"protocol": rec.get("protocol"), "preset": rec.get("preset"),
            "dataset": (rec.get("dataset") or {}).get("name"), "mini": bool((rec.get("dataset") or {}).get("mini")),
            **{k: v for k, v in c.items()}}


def comparison_markdown(c: dict[str, Any]) -> str:
    iv = c["interval"]

    def side(s):
        i = s["interval"]
        return f"{s['value']:.2f}" + (f" [{i[0]:.2f}, {i[1]:.2f}]" if i else "")
    lines = [f"# compare · {_md(c['protocol'])} · {_md(c['preset'])} · {_md(c['dataset'])}"
             f"{' (miniature)' if c['mini'] else ''}", "",
             f"Metric `{c['metric']}` over the same {c['n']} items; intervals are 95% percentile bootstrap "
             f"({iv['resamples']} resamples, paired for the difference).", "",
             "| | checkpoint | run id | value |", "|---|---|---|---|",
             f"| A | {_md(c['a']['who'])} | {_md(c['a']['run_id'])} | {side(c['a'])} |",
             f"| B | {_md(c['b']['who'])} | {_md(c['b']['run_id'])} | {side(c['b'])} |", "",
             f"Δ (A − B) = {c['difference']:+.2f}, 95% CI [{iv['lo']:+.2f}, {iv['hi']:+.2f}]; {c['test']} "
             f"p = {c['p_value']:.3g}.", "", f"**Verdict:** {_md(c['verdict'])}", ""]
    return "\n".join(lines)


def comparison_files(results: Path) -> list[Path]:
    folder = Path(results) / "compare"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def index_markdown(results: Path) -> str:
    rows = ["# Paired comparisons (`bench compare --write`)", "",
            "| protocol | dataset | metric | A | B | Δ (95% CI) | p | verdict |", "|---|---|---|---|---|---|---|---|"]
    for p in comparison_files(results):
        c = json.loads(p.read_text())
        iv = c["interval"]
        rows.append(f"| {_md(c['protocol'])} | {_md(c['dataset'])}{' (mini)' if c['mini'] else ''} | "
                    f"{_md(c['metric'])} | {_md(c['a']['who'])} | {_md(c['b']['who'])} | {c['difference']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}]"
                    f" | {c['p_value']:.3g} | [{'significant' if c['significant'] else 'not significant'}]"
                    f"({p.with_suffix('.md').name}) |")
    return "\n".join(rows) + "\n"


def write_comparison(c: dict[str, Any], rec_a: dict[str, Any], results: Path) -> list[Path]:
    stored = _stored(c, rec_a)
    stored["difference"] = round(float(stored["difference"]), 6)
    for key in ("p_value", "p_bootstrap"):   # significant digits, not decimals: a p of 1e-50 is not 0
        stored[key] = float(f"{float(stored[key]):.6g}")
    stored["interval"] = {k: round(v, 6) if isinstance(v, float) else v for k, v in stored["interval"].items()}
    name = "__".join(safe_name(x, 60) for x in (stored["protocol"], stored["preset"], c["metric"], c["a"]["who"],
                                        "vs", c["b"]["who"]))
    folder = Path(results) / "compare"
    paths = [atomic_write_json(folder / f"{name}.json", stored, root=folder),
             atomic_write_text(folder / f"{name}.md", comparison_markdown(stored), root=folder)]
    paths.append(atomic_write_text(folder / "index.md", index_markdown(results), root=folder))
    return paths
