"""Figures next to the leaderboards (PNG + SVG): measured vs documented per table, k-NN accuracy over k, label
efficiency (semisup fractions) and transfer per dataset. Only figures with at least one measured value are drawn.

Determinism: Agg backend, fixed `svg.hashsalt`, no Date/Software metadata, sorted inputs — regenerating from the
same records writes byte-identical files (tested).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._io import atomic_write_bytes  # noqa: E402
from .tables import Table, _doc_rows, label_fraction, measurements  # noqa: E402

__all__ = ["write_plots"]

_RC = {"svg.hashsalt": "bench", "svg.fonttype": "path", "font.size": 8, "figure.dpi": 100}
MAX_DOCUMENTED_BARS = 25


def _save(fig, stem: Path) -> list[Path]:
    out = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=meta, bbox_inches="tight")
        out.append(atomic_write_bytes(stem.with_suffix(f".{ext}"), buf.getvalue()))
    plt.close(fig)
    return out


def _vs_documented(table: Table, stem: Path) -> list[Path]:
    """Horizontal bars of the first metric that has a measured value: documented grey, measured blue
    (hatched when not comparable)."""
    metric = next((c for c in table.metric_columns() if any(c in m.values for m in table.measured)), None)
    if metric is None:
        return []
    # Documented rows of the measured rows' presets first, so the cap drops the least comparable ones.
    presets = {m.preset for m in table.measured}
    docs = sorted((d.preset not in presets, i, d, cells) for i, (_, cells, d) in enumerate(_doc_rows(table))
                  if metric in cells)[:MAX_DOCUMENTED_BARS]
    bars = [(f"{d.method} {d.arch} ({d.table})".strip(), float(cells[metric]), "0.6", "")
            for _, _, d, cells in sorted(docs, key=lambda x: x[1])]
    bars += [(f"{m.method} {m.arch} [{m.checkpoint}, {m.preset}]", m.values[metric], "tab:blue",
              "//" if m.reasons else "") for m in table.measured if metric in m.values]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(bars) + 1.2))
    for i, (label, value, color, hatch) in enumerate(bars):
        ax.barh(i, value, color=color, hatch=hatch, edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{table.protocol} · {table.dataset}: measured (blue; hatched = not comparable) vs documented")
    return _save(fig, stem)


def _knn_over_k(records: list[dict[str, Any]], results: Path) -> list[Path]:
    by_dataset: dict[str, list[tuple[str, list[int], list[float]]]] = {}
    for m in measurements([r for r in records if r.get("protocol") == "knn"]):
        ks = sorted(int(k[len("top1_k"):]) for k in m.values if re.fullmatch(r"top1_k\d+", k))
        if ks:
            label = f"{m.method} {m.arch} [{m.checkpoint}, {m.preset}]" + (" *" if m.reasons else "")
            by_dataset.setdefault(m.dataset, []).append((label, ks, [m.values[f"top1_k{k}"] for k in ks]))
    out = []
    for dataset, lines in sorted(by_dataset.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, ks, ys in lines:
            ax.plot(ks, ys, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("k (neighbours)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"k-NN top-1 over k · {dataset} (* not comparable)")
        ax.legend(fontsize=6)
        out += _save(fig, results / f"knn__{dataset}__over_k")
    return out


def label_efficiency_points(records: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """top1 over the labelled percentage, one line per checkpoint/preset (records without a fraction skipped)."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.get("protocol") != "semisup":
            continue
        frac, top1 = label_fraction(r), r.get("metrics") or {}
        if frac is None or "top1" not in top1:
            continue
        ck = r.get("checkpoint") or {}
        label = f"{ck.get('name')} {ck.get('arch')} [{r.get('preset')}]" + ("" if r.get("comparable") else " *")
        lines.setdefault(label, []).append((float(frac.rstrip("%")), float(top1["top1"])))
    return {label: sorted(points) for label, points in sorted(lines.items())}


def _label_efficiency(records: list[dict[str, Any]], results: Path) -> list[Path]:
    lines = label_efficiency_points(records)
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ticks = sorted({x for points in lines.values() for x, _ in points})
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.set_xlabel("labelled fraction of the train split")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Label efficiency (semisup; * not comparable)")
    ax.legend(fontsize=6)
    return _save(fig, results / "semisup__label_efficiency")


def _transfer(records: list[dict[str, Any]], results: Path) -> list[Path]:
    rows = [r for r in sorted(records, key=lambda r: r.get("fingerprint", "")) if r.get("protocol") == "transfer"]
    datasets = sorted({k for r in rows for k in (r.get("metrics") or {}) if k != "mean"})
    if not datasets:
        return []
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6, len(datasets) * 0.8), 4))
    for i, r in enumerate(rows):
        ck = r.get("checkpoint") or {}
        ys = [(r.get("metrics") or {}).get(d, float("nan")) for d in datasets]
        ax.bar([j + i * width for j in range(len(datasets))], ys, width,
               label=f"{ck.get('name')} {ck.get('arch')} [{r.get('preset')}]" + ("" if r.get("comparable") else " *"))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets, rotation=45, ha="right")
    ax.set_ylabel("score (%)")
    ax.set_title("Transfer per dataset (* not comparable)")
    ax.legend(fontsize=6)
    return _save(fig, results / "transfer__per_dataset")


def write_plots(results: Path, tables: list[Table], records: list[dict[str, Any]]) -> list[Path]:
    with plt.rc_context(_RC):
        out = []
        for t in tables:
            if t.measured:
                out += _vs_documented(t, results / t.stem)
        out += _knn_over_k(records, results)
        out += _label_efficiency(records, results)
        out += _transfer(records, results)
    return out
