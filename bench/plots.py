"""Figures next to the leaderboards (PNG + SVG): measured vs documented per table, k-NN accuracy over k, label
efficiency (semisup fractions) and transfer per dataset, each with the papers' numbers beside the measured ones.
Only figures with at least one measured value are drawn.

Decisions:
- The bars plot the table's headline metric (mIoU, AP50, top-1; retrieval mAP_M and mAP_H side by side), the
  axes say what and in which unit ('top-1 (%)').
- At most MAX_DOCUMENTED_BARS documented bars per panel, but never fewer than the papers' rows of the measured
  rows' methods (DINO's own rows for a DINO checkpoint); what the cap leaves out is counted in the title.
- Every legend entry appears once.
- Miniature rows never share an axis with the papers' (ImageNet-scale) numbers: they get their own panel.
- Labels name methods and papers as a reader knows them ("BYOL ResNet-50 — Grill et al. 2020"), never source keys.

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
from matplotlib.patches import Patch  # noqa: E402

from ._io import atomic_write_bytes  # noqa: E402
import functools  # noqa: E402

from ._text import mpl_text, safe_name  # noqa: E402
from .reference import canonical_arch, canonical_method, documented_entries  # noqa: E402
from .reference.names import display_method, method_names  # noqa: E402
from .tables import (LOWER_IS_BETTER, Measured, Table, _doc_rows, _method_arch_match, label_fraction,  # noqa: E402
                     measurements, ordered_rows)

__all__ = ["write_plots", "metric_label", "vs_documented_figure", "knn_over_k_figures", "label_efficiency_figure",
           "transfer_figure", "label_efficiency_points"]

_RC = {"svg.hashsalt": "bench", "svg.fonttype": "path", "font.size": 8, "figure.dpi": 100}
MAX_DOCUMENTED_BARS = 25
DOC_COLOUR, MEASURED_COLOUR = "0.6", "tab:blue"
# protocols whose headline is a pair read together (revisited Oxford/Paris: Medium and Hard)
PLOT_METRICS = {"retrieval": ("mAP_M", "mAP_H")}
_METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "top1_max": "best-epoch top-1", "AP": "box AP",
                 "AP50": "box AP50", "AP75": "box AP75", "mask_AP": "mask AP", "mAP_M": "mAP, Medium",
                 "mAP_H": "mAP, Hard", "mAP_E": "mAP, Easy", "mAP_11pt": "mAP (11-point)",
                 "mean_per_class_acc": "mean per-class accuracy", "mCE": "mCE", "mFR": "mFR", "mFP": "mFP"}


def metric_label(metric: str) -> str:
    """An axis label with its unit: 'top1' → 'top-1 (%)', 'top1@1%' → 'top-1 at 1% labels (%)', 'mCE' →
    'mCE (%, lower is better)'. Every bench metric is a percentage."""
    base, _, fraction = metric.partition("@")
    layer = re.fullmatch(r"top1_(conv\d|res\d|best)", base)
    name = f"top-1, {layer[1]}" if layer else _METRIC_NAMES.get(base, base)
    if fraction:
        name += f" at {fraction} labels"
    return mpl_text(f"{name} (%, lower is better)" if base in LOWER_IS_BETTER else f"{name} (%)")


def _save(fig, root: Path, stem: str) -> list[Path]:
    """PNG + SVG of `fig` as ROOT/<stem>.<ext>; `stem` is a safe_name, and nothing is written outside ROOT."""
    out = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=meta, bbox_inches="tight")
        out.append(atomic_write_bytes(root / f"{stem}.{ext}", buf.getvalue(), root=root))
    plt.close(fig)
    return out


def _legend(ax, entries: list[tuple[str, Any]], **kw) -> None:
    """A legend with each label once (the first handle of that label)."""
    seen: dict[str, Any] = {}
    for label, handle in entries:
        seen.setdefault(label, handle)
    if seen:
        ax.legend(list(seen.values()), list(seen), **kw)


@functools.lru_cache(maxsize=1)
def _method_names() -> dict[str, str]:
    return method_names(documented_entries())


def paper_short(paper: str) -> str:
    """'Grill et al. "Bootstrap your own latent ...". NeurIPS 2020.' → 'Grill et al. 2020'."""
    authors = paper.split('"')[0].strip().rstrip(" .")
    authors += "." if authors.endswith(" al") else ""
    years = re.findall(r"\b(?:19|20)\d\d\b", paper)
    return " ".join(p for p in (authors, years[-1] if years else "") if p)


def _doc_label(d) -> str:
    method = display_method(d.method, d.table, _method_names())
    return mpl_text(" ".join(p for p in (method, d.arch) if p) + (f" — {paper_short(d.paper)}" if d.paper else ""))


def _measured_label(m: Measured) -> str:   # record text: drawn literally (bench._text.mpl_text)
    return mpl_text(f"{m.method} {m.arch} [{m.checkpoint}, {m.preset}]")


def _is_mini(m: Measured) -> bool:
    return any((r.get("dataset") or {}).get("mini") for r in m.records)


def _plot_metrics(table: Table) -> list[str]:
    have = [c for c in table.metric_columns() if any(c in m.values for m in table.measured)]
    wanted = [c for c in PLOT_METRICS.get(table.protocol, ()) if c in have]
    return wanted or have[:1]


def _bars(table: Table, metric: str) -> tuple[list[tuple[str, float, str, str, tuple | None]], int, list]:
    """(label, value, colour, hatch, 95% interval or None) in the table's order, how many documented rows the cap
    left out, and the miniature rows' bars (their own panel). The papers' rows of a measured row's method and arch
    are always kept; the others fill up to the cap, rows of the measured presets first."""
    measured = [m for m in table.measured if metric in m.values]
    presets = {m.preset for m in measured}
    methods = {canonical_method(m.method) for m in measured}
    docs = [(i, item) for i, item in enumerate(ordered_rows(table))
            if not isinstance(item, Measured) and metric in item[0]]
    own = {i for i, (_, d) in docs if any(_method_arch_match(d, m) for m in measured)
           or canonical_method(d.method) in methods}
    rest = sorted((i for i, _ in docs if i not in own), key=lambda i: (dict(docs)[i][1].preset not in presets, i))
    keep = own | set(rest[:max(0, MAX_DOCUMENTED_BARS - len(own))])
    bars, mini, same = [], [], {}
    for i, item in enumerate(ordered_rows(table)):
        if isinstance(item, Measured):
            if metric in item.values:
                (mini if _is_mini(item) else bars).append((_measured_label(item), item.values[metric],
                                                           MEASURED_COLOUR, "//" if item.reasons else "",
                                                           item.intervals.get(metric)))
        elif i in keep:
            cells, d = item
            # the same number of the same method and arch, reported by several papers: one bar naming them all
            key = (display_method(d.method, d.table, _method_names()), canonical_arch(d.arch), cells[metric])
            if key in same:
                j = same[key]
                bars[j] = (f"{bars[j][0]}; {mpl_text(paper_short(d.paper))}",) + bars[j][1:]
                continue
            same[key] = len(bars)
            bars.append((_doc_label(d), float(cells[metric]), DOC_COLOUR, "", None))
    return bars, len(docs) - len(keep & {i for i, _ in docs}), mini


def vs_documented_figure(table: Table):
    """Horizontal bars of the headline metric(s): documented grey, measured blue (hatched when not comparable),
    in the table's order (grouped by architecture, best first). None when no measured row has the metric."""
    metrics = _plot_metrics(table)
    if not metrics:
        return None
    panels = []
    for metric in metrics:
        bars, dropped, mini = _bars(table, metric)
        if bars:
            panels.append((metric, bars, dropped, ""))
        if mini:
            panels.append((metric, mini, 0, " · miniature datasets (not comparable with the papers)"))
    heights = [0.25 * len(bars) + 1.4 for _, bars, _, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    entries = []
    for ax, (metric, bars, dropped, where) in zip(axes[:, 0], panels):
        for i, (label, value, colour, hatch, iv) in enumerate(bars):
            # a measured bar carries its record's 95% bootstrap interval as an error bar
            err = [[value - iv[0]], [iv[1] - value]] if iv else None
            ax.barh(i, value, xerr=err, capsize=2, error_kw={"elinewidth": 0.8}, color=colour, hatch=hatch,
                    edgecolor="black", linewidth=0.3)
        ax.set_yticks(range(len(bars)), [b[0] for b in bars])
        ax.invert_yaxis()
        ax.set_xlabel(metric_label(metric))
        note = f" ({dropped} more documented rows in the table)" if dropped else ""
        ax.set_title(mpl_text(f"{table.protocol} · {table.dataset}{where}: {metric}{note}", limit=200))
        kinds = {(c, h) for _, _, c, h, _ in bars}
        entries += [(name, Patch(facecolor=c, hatch=h, edgecolor="black", linewidth=0.3))
                    for name, c, h in (("documented (paper)", DOC_COLOUR, ""), ("measured", MEASURED_COLOUR, ""),
                                       ("measured, not comparable", MEASURED_COLOUR, "//")) if (c, h) in kinds]
    _legend(axes[-1][0], entries, fontsize=6, loc="lower right")
    return fig


def knn_over_k_figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """{dataset: figure} of k-NN top-1 over k, one line per measured row, the k values as ticks; the papers'
    top-1 at their preset's k as grey markers when the table has them."""
    by_dataset: dict[str, list[tuple[str, list[int], list[float]]]] = {}
    for m in measurements([r for r in records if r.get("protocol") == "knn"]):
        ks = sorted(int(k[len("top1_k"):]) for k in m.values if re.fullmatch(r"top1_k\d+", k))
        if ks:
            label = _measured_label(m) + (" *" if m.reasons else "")   # a record's dataset, escaped in the title
            by_dataset.setdefault(m.dataset, []).append((label, ks, [m.values[f"top1_k{k}"] for k in ks]))
    out = {}
    for dataset, lines in sorted(by_dataset.items()):
        fig, ax = plt.subplots(figsize=(6, 4))
        entries = []
        for label, ks, ys in lines:
            (line,) = ax.plot(ks, ys, marker="o")
            entries.append((label, line))
        ax.set_xscale("log")
        ticks = sorted({k for _, ks, _ in lines for k in ks})
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlabel("k (neighbours)")
        ax.set_ylabel(metric_label("top1"))
        ax.set_title(mpl_text(f"k-NN top-1 over k · {dataset} (* not comparable)", limit=200))
        _legend(ax, entries, fontsize=6)
        out[dataset] = fig
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
        label = mpl_text(f"{ck.get('name')} {ck.get('arch')} [{r.get('preset')}]")
        label += "" if r.get("comparable") else " *"
        lines.setdefault(label, []).append((float(frac.rstrip("%")), float(top1["top1"])))
    return {label: sorted(points) for label, points in sorted(lines.items())}


MAX_DOCUMENTED_LINES = 8


def documented_label_efficiency(tables: list[Table], presets: set[str], methods: set[str | None]
                                ) -> dict[str, list[tuple[float, float]]]:
    """The papers' top-1 over the label fraction, at most MAX_DOCUMENTED_LINES lines: rows of the measured presets
    first (SimCLR's slide prints top-5 only, so BYOL's table supplies the top-1 rows), of the measured methods
    next, then the best."""
    lines = []
    for t in tables:
        if t.protocol != "semisup":
            continue
        for _, cells, d in _doc_rows(t):
            pts = sorted((float(c.split("@")[1].rstrip("%")), float(v)) for c, v in cells.items()
                         if c.startswith("top1@"))
            if pts:
                lines.append((d.preset not in presets, canonical_method(d.method) not in methods,
                              -max(y for _, y in pts), _doc_label(d), pts))
    return {label: pts for *_, label, pts in sorted(lines)[:MAX_DOCUMENTED_LINES]}


def label_efficiency_figure(records: list[dict[str, Any]], tables: list[Table]):
    lines = label_efficiency_points(records)
    if not lines:
        return None
    semisup = [r for r in records if r.get("protocol") == "semisup"]
    methods = {canonical_method(m.method) for m in measurements(semisup)}
    docs = documented_label_efficiency(tables, {str(r.get("preset")) for r in semisup}, methods)
    mini = any((r.get("dataset") or {}).get("mini") for r in semisup)
    # miniature lines get their own axis: a digit miniature's 90% is not on the papers' ImageNet scale
    fig, axes = plt.subplots(1, 2 if mini and docs else 1, figsize=(11 if mini and docs else 6, 4), squeeze=False)
    ax_doc, ax_run = axes[0][0], axes[0][-1]
    doc_entries, run_entries = [], []
    for label, points in docs.items():
        xs, ys = zip(*points)
        (line,) = ax_doc.plot(xs, ys, marker="s", linestyle="--", color=DOC_COLOUR, linewidth=0.8)
        doc_entries.append((f"paper: {label}", line))
    for label, points in lines.items():
        xs, ys = zip(*points)
        (line,) = ax_run.plot(xs, ys, marker="o")
        run_entries.append((label, line))
    for ax, pts in ((ax_doc, list(docs.values())), (ax_run, list(lines.values()))):
        if ax is ax_run and ax_run is ax_doc:
            pts = list(lines.values()) + list(docs.values())
        ax.set_xscale("log")
        ticks = sorted({x for p in pts for x, _ in p})
        ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled fraction of the train split")
        ax.set_ylabel(metric_label("top1"))
    if ax_doc is ax_run:
        ax_run.set_title("Label efficiency (semisup; dashed grey: papers; * not comparable)")
        _legend(ax_run, doc_entries + run_entries, fontsize=6)
    else:
        ax_doc.set_title("Label efficiency: the papers (ImageNet)")
        ax_run.set_title("Measured on the miniature datasets (* not comparable)")
        _legend(ax_doc, doc_entries, fontsize=6)
        _legend(ax_run, run_entries, fontsize=6)
    return fig


def transfer_figure(records: list[dict[str, Any]], tables: list[Table]):
    """Grouped bars per transfer dataset: each measured record, then the papers' rows (grey shades) at the
    dataset's documented metric."""
    rows = [r for r in sorted(records, key=lambda r: r.get("fingerprint", "")) if r.get("protocol") == "transfer"]
    datasets = sorted({k for r in rows for k in (r.get("metrics") or {}) if k != "mean"})
    if not datasets:
        return None
    per = {t.dataset: t for t in tables if t.protocol == "transfer"}
    doc_series: dict[str, dict[str, float]] = {}
    for ds in datasets:
        for _, cells, d in _doc_rows(per[ds]) if ds in per else []:
            doc_series.setdefault(_doc_label(d), {})[ds] = float(cells[d.metric])
    series = [(mpl_text(f"{(r.get('checkpoint') or {}).get('name')} {(r.get('checkpoint') or {}).get('arch')} "
                        f"[{r.get('preset')}]") + ("" if r.get("comparable") else " *"),
               [(r.get("metrics") or {}).get(d, float("nan")) for d in datasets], None) for r in rows]
    shades = ["0.45", "0.6", "0.75", "0.85"]
    papers = [(f"paper: {label}", [vals.get(d, float("nan")) for d in datasets], shades[i % len(shades)])
              for i, (label, vals) in enumerate(sorted(doc_series.items()))]
    # miniature records get their own axis: the digit miniatures are not on the papers' scale
    mini = any((r.get("dataset") or {}).get("mini") for r in rows)
    groups = [(series, " (miniature datasets: not comparable with the papers)"), (papers, ": the papers")] \
        if mini and papers else [(series + papers, "")]
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(6, len(datasets) * 0.9), 4 * len(groups)), squeeze=False)
    for ax, (group, where) in zip(axes[:, 0], groups):
        width = 0.8 / len(group)
        entries = []
        for i, (label, ys, colour) in enumerate(group):
            bars = ax.bar([j + i * width for j in range(len(datasets))], ys, width, color=colour)
            entries.append((label, bars))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], [mpl_text(d) for d in datasets],
                      rotation=45, ha="right")
        ax.set_ylabel("score (%)")
        ax.set_title(f"Transfer per dataset{where}: its metric (top-1, mean per-class accuracy or 11-point mAP)\n"
                     "grey: papers; * not comparable")
        _legend(ax, entries, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def write_plots(results: Path, tables: list[Table], records: list[dict[str, Any]]) -> list[Path]:
    with plt.rc_context(_RC):
        out = []
        for t in tables:
            if t.measured and (fig := vs_documented_figure(t)) is not None:
                out += _save(fig, results, t.stem)
        for dataset, fig in knn_over_k_figures(records).items():   # the dataset name is a record's: sanitised
            out += _save(fig, results, safe_name(f"knn__{dataset}__over_k"))
        if (fig := label_efficiency_figure(records, tables)) is not None:
            out += _save(fig, results, "semisup__label_efficiency")
        if (fig := transfer_figure(records, tables)) is not None:
            out += _save(fig, results, "transfer__per_dataset")
    return out
