"""A sensitivity sweep (bench.sensitivity) as OUT/sensitivity/<name>.json, .md and .png/.svg; the index
OUT/sensitivity/index.md lists every sweep (what `bench site` shows)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ._text import md_escape as _md
from ._text import mpl_text, safe_name

__all__ = ["sweep_name", "sweep_markdown", "sweep_figure", "write_sweep", "sweep_files", "sweeps_index"]


def sweep_name(s: dict[str, Any]) -> str:
    return "__".join(safe_name(x, 60) for x in (s["protocol"], s["preset"], s["checkpoint_name"],
                                        s["dataset"] + ("-mini" if s["mini"] else "")))


def _cell(p: dict[str, Any]) -> str:
    if p.get("value") is None:
        return "failed"
    iv = p.get("interval")
    return f"{p['value']:.2f}" + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "")


def sweep_markdown(s: dict[str, Any]) -> str:
    paper = next((p for p in s["points"] if p["paper"] and p.get("value") is not None), None)
    lines = [f"# sensitivity · {_md(s['protocol'])} · {_md(s['preset'])} · {_md(s['checkpoint_name'])} · "
             f"{_md(s['dataset'])}"
             f"{' (miniature)' if s['mini'] else ''}", "",
             f"`{s['metric']}` with one protocol choice changed at a time; **paper** = preset `{s['preset']}` as "
             f"published. Intervals: 95% bootstrap over the evaluation set. Each row's `bench run` command (and "
             f"fingerprint) is in the `.json` beside this file.", "",
             "| axis | value | " + _md(s["metric"]) + " | Δ vs paper | fingerprint | record |", "|---|---|---|---|---|---|"]
    for p in s["points"]:
        delta = f"{p['value'] - paper['value']:+.2f}" if paper and p.get("value") is not None and not p["paper"] \
            else ""
        label = f"**{_md(p['label'])}**" if p["paper"] else _md(p["label"])
        lines.append(f"| {'**paper**' if p['paper'] else _md(p['axis'])} | {label} | {_cell(p)} | {delta} | "
                     f"{_md(p.get('fingerprint', ''))} | {_md(p.get('run_id', p.get('error', '')))} |")
    lines += ["", "Spread (max − min, the paper variant included):", "", "| axis | min | max | spread |",
              "|---|---|---|---|"]
    for axis, v in s["spread"].items():
        lines.append(f"| {_md(axis)} | {v['min']:.2f} | {v['max']:.2f} | {v['spread']:.2f} |")
    return "\n".join(lines) + "\n"


def sweep_figure(s: dict[str, Any]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = [p for p in s["points"] if p.get("value") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(pts) + 1.4))
    ys = list(range(len(pts)))[::-1]
    for y, p in zip(ys, pts):
        iv = p.get("interval")
        err = [[p["value"] - iv[0]], [iv[1] - p["value"]]] if iv else None
        ax.errorbar(p["value"], y, xerr=err, fmt="D" if p["paper"] else "o", color="C3" if p["paper"] else "C0",
                    capsize=3, ms=6 if p["paper"] else 4)
    paper = next((p for p in pts if p["paper"]), None)
    if paper:
        ax.axvline(paper["value"], color="C3", lw=0.8, ls="--")
    spread = s["spread"].get("all")
    if spread:
        ax.axvspan(spread["min"], spread["max"], color="0.9", zorder=0)
    ax.set_yticks(ys, [mpl_text(("paper: " if p["paper"] else f"{p['axis']}: ") + p["label"]) for p in pts],
                  fontsize=8)
    ax.set_xlabel(mpl_text(f"{s['metric']} (95% bootstrap interval; grey: spread {spread['spread']:.2f})" if spread
                           else s["metric"]))
    ax.set_title(mpl_text(f"{s['protocol']} · {s['checkpoint_name']} · {s['dataset']}{' (mini)' if s['mini'] else ''}",
                          limit=200), fontsize=9)
    fig.tight_layout()
    return fig


def _figure_bytes(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    meta = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buf, format=fmt, dpi=110, metadata=meta)
    return buf.getvalue()


def sweep_files(results: Path) -> list[Path]:
    folder = Path(results) / "sensitivity"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def sweeps_index(results: Path) -> str:
    rows = ["# Protocol sensitivity (`bench sensitivity`)", "",
            "| protocol | checkpoint | dataset | metric | paper | spread (all) | sweep |", "|---|---|---|---|---|---|---|"]
    for p in sweep_files(results):
        s = json.loads(p.read_text())
        paper = next((x for x in s["points"] if x["paper"]), {})
        spread = s["spread"].get("all", {}).get("spread")
        rows.append(f"| {_md(s['protocol'])} | {_md(s['checkpoint_name'])} | {_md(s['dataset'])}"
                    f"{' (mini)' if s['mini'] else ''} | {_md(s['metric'])} | {_cell(paper) if paper else ''} | "
                    f"{'' if spread is None else f'{spread:.2f}'} | [{p.stem}]({p.stem}.md) |")
    return "\n".join(rows) + "\n"


def write_sweep(s: dict[str, Any], results: Path, *, plot: bool = True) -> list[Path]:
    folder = Path(results) / "sensitivity"
    name = sweep_name(s)
    paths = [atomic_write_json(folder / f"{name}.json", s, root=folder),
             atomic_write_text(folder / f"{name}.md", sweep_markdown(s), root=folder)]
    if plot:
        import matplotlib.pyplot as plt
        fig = sweep_figure(s)
        for fmt in ("png", "svg"):
            paths.append(atomic_write_bytes(folder / f"{name}.{fmt}", _figure_bytes(fig, fmt), root=folder))
        plt.close(fig)
    paths.append(atomic_write_text(folder / "index.md", sweeps_index(results), root=folder))
    return paths
