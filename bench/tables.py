"""Leaderboards: run records + the papers' documented numbers → one Markdown and one CSV per protocol × dataset.

Decisions:
- Documented cells are the printed strings (never re-rounded); measured cells are `%.2f`, followed by the 95%
  bootstrap interval the record carries (`76.10 ± 0.30`, or `76.10 [75.70, 76.40]` when asymmetric); deltas `%+.2f`.
- A measured row meets documented rows of the same table by (method, arch): the method comes from
  checkpoints.yaml (`method`, else `family`) or the record's checkpoint family, both normalised by
  `bench.reference.canonical_method`; the arch by `canonical_arch`. A delta is printed only when the record is
  comparable (full data, no --quick, preset not overridden) AND ran the documented preset at its current version
  (protocols/*.yaml `version`; a record without one ran version 1); otherwise the Δ cell says why not.
- Everything is sorted and formatted deterministically and no time or path enters a table, so regenerating from
  the same records gives byte-identical files.
- Protocol-specific record shapes are read by small adapters: `semisup` puts the label fraction into the column
  (top1@1%), `transfer` and `robustness` spread their per-dataset metrics over the per-dataset tables,
  `voc_transfer` goes to its task's dataset (VOC2007 or VOC2012).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ._io import atomic_write_text
from ._text import md_escape, safe_name
from .errors import BenchError, PresetError
from .presets import preset_version
from .records import read_records, record_run_id
from .reference import (Documented, _md, arch_matches, canonical_arch, canonical_method, documented_entries,
                        pretrain_matches, pretrain_value, reference_dataset)
from .coverage import registered_for
from .sweep import catalog_entry_for
from .uncertainty import interval_text, record_interval

__all__ = ["Measured", "Table", "DeltaPart", "METRIC_ORDER", "measurements", "build_tables", "delta_parts",
           "attach_spreads", "read_sweeps",
           "ordered_rows", "arch_group", "write_tables",
           "check_tables", "label_fraction", "pretrain_text", "reference_index_rows"]

FIXED_COLUMNS = ("source", "method", "arch", "checkpoint", "preset", "setting")
TAIL_COLUMNS = ("delta", "record")


@dataclass
class Measured:
    """One measured row: a checkpoint under one preset on one dataset (several records may fill it)."""
    protocol: str
    dataset: str
    method: str
    arch: str
    checkpoint: str
    preset: str
    reasons: tuple[str, ...]            # why not comparable (empty = comparable)
    values: dict[str, float] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    pretrain: dict[str, Any] = field(default_factory=dict)   # the checkpoint's pre-training setting (ablations)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)   # 95% bootstrap interval per column
    spreads: dict[str, tuple[float, float]] = field(default_factory=dict)     # (min, max) over a sensitivity sweep

    @property
    def key(self) -> tuple:
        return (self.protocol, self.dataset, self.method, self.arch, self.checkpoint, self.preset, self.reasons,
                pretrain_text(self.pretrain))


def pretrain_text(pretrain: dict[str, Any] | None) -> str:
    """'momentum=0.99; mlp=yes' in key order: the setting cell of an ablation checkpoint's row."""
    def show(v):
        return ("yes" if v else "no") if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)
    return "; ".join(f"{k}={show(v)}" for k, v in sorted((pretrain or {}).items()))


@dataclass
class Table:
    protocol: str
    dataset: str
    documented: list[Documented]
    measured: list[Measured]

    @property
    def stem(self) -> str:
        return safe_name(f"{self.protocol}__{self.dataset}")

    def metric_columns(self) -> list[str]:
        """The metric columns, headline first: the protocol's fixed order (METRIC_ORDER), then the records'
        headline metrics, then the rest as they first appear (documented metrics, then measured)."""
        cols = list(dict.fromkeys(d.metric for d in self.documented))
        for m in self.measured:
            cols += [c for c in m.values if c not in cols and (not self.documented or _is_headline(m, c))]
        heads = [h.split(":")[-1] for m in self.measured for r in m.records for h in (r.get("headline") or [])]
        rank = {c: i for i, c in enumerate(dict.fromkeys(list(METRIC_ORDER.get(self.protocol, ())) + heads))}
        return sorted(cols, key=lambda c: (rank.get(c, len(rank)), cols.index(c)))

    @property
    def headline(self) -> str | None:
        """The column rows are sorted by: the first metric column any row has a value in."""
        docs = {d.metric for d in self.documented}
        return next((c for c in self.metric_columns() if c in docs or any(c in m.values for m in self.measured)),
                    None)


# Each protocol's metric columns in print order, its headline metric first (the order of the protocol's
# ProtocolResult.headline; semisup's columns carry the label fraction). Columns not listed follow.
METRIC_ORDER: dict[str, tuple[str, ...]] = {
    "knn": ("top1", "top5"), "linear": ("top1", "top5"), "logreg": ("top1", "top5"), "svm": ("top1",),
    "finetune": ("top1", "top1_max", "top5"),
    "semisup": ("top1@1%", "top1@10%", "top5@1%", "top5@10%"),
    "layers": ("top1_best",),
    "segmentation": ("mIoU", "mAcc", "aAcc"),
    "detection": ("AP50", "AP", "AP75"),
    "coco_detection": ("AP", "AP50", "AP75", "APs", "APm", "APl", "mask_AP", "mask_AP50", "mask_AP75"),
    "retrieval": ("mAP_M", "mAP_H", "mAP_E", "mAP"),
    "voc_transfer": ("mAP", "mAP_ms", "mAP_11pt", "mIoU"),
    "robustness": ("top1", "mCE", "mFR", "mFP"),
    "depth": ("rmse", "abs_rel", "d1", "silog"),
    "video_segmentation": ("J&F", "J", "F"),
    "correspondence": ("pck_bbox", "pck_img", "pck_bbox_category_mean"),
}
# error rates: lower is better, so these tables sort ascending
LOWER_IS_BETTER = frozenset({"mCE", "mFR", "mFP", "relative_mCE",
                             "rmse", "abs_rel", "sq_rel", "rmse_log", "silog", "log10"})   # depth errors


def _is_headline(m: Measured, column: str) -> bool:
    head = {h.split(":")[-1] for r in m.records for h in (r.get("headline") or [])}   # robustness: <dataset>:<metric>
    return column.split("@")[0] in head or not head


def label_fraction(record: dict[str, Any]) -> str | None:
    """'1%' / '10%' / '100%' from a semisup record's preset settings, options or details; None when absent.
    A record's `details.label_percent` (semisup writes it) is a percentage; otherwise values ≤ 1 are fractions,
    larger ones percentages."""
    explicit = (record.get("details") or {}).get("label_percent")
    if isinstance(explicit, (int, float)) and not isinstance(explicit, bool) and explicit > 0:
        return f"{explicit:g}%"
    pools = [record.get("preset_settings") or {}, (record.get("run_key") or {}).get("options") or {},
             record.get("details") or {}]
    for pool in pools:
        for key in ("label_fraction", "fraction", "labels_fraction", "label_percent", "percent", "labels_pct", "pct"):
            value = pool.get(key) if isinstance(pool, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                pct = value * 100 if value <= 1 else value
                return f"{pct:g}%"
    return None


def _identity(record: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(method, arch, checkpoint name, pre-training setting) of a record, the method from checkpoints.yaml when it
    knows the file; the setting is the record's (`pretrain`, written from checkpoints.yaml and --ckpt-meta), else
    checkpoints.yaml's."""
    ck = record.get("checkpoint") or {}
    hit = catalog_entry_for(ck)
    entry = hit[1] if hit else None
    method = (entry and (entry.method or entry.family)) or ck.get("family") or "unknown"
    name = hit[0] if hit else (ck.get("name") or "unknown")
    pretrain = record.get("pretrain") or (entry.pretrain if entry else None)
    pretrain = {str(k): pretrain_value(v) for k, v in (pretrain or {}).items()} if isinstance(pretrain, dict) else {}
    return str(method), str(ck.get("arch") or (entry and entry.arch) or ""), str(name), pretrain


def _pieces(record: dict[str, Any]) -> Iterable[tuple[str, dict[str, float], tuple[str, ...]]]:
    """(reference dataset, {column: value}, extra reasons) for each table a record contributes to."""
    metrics = {k: float(v) for k, v in (record.get("metrics") or {}).items()}
    dataset = reference_dataset((record.get("dataset") or {}).get("name", "unknown"))
    protocol = record.get("protocol")
    if protocol == "semisup":
        frac = label_fraction(record)
        if frac is None:
            yield dataset, metrics, ("label fraction not in the record",)
        else:
            yield dataset, {f"{k}@{frac}": v for k, v in metrics.items()}, ()
    elif protocol == "transfer":
        doc_metric = {d.dataset: d.metric for d in documented_entries() if d.protocol == "transfer"}
        for key, value in metrics.items():
            if key != "mean":
                yield reference_dataset(key), {doc_metric.get(reference_dataset(key), "score"): value}, ()
    elif protocol == "robustness":   # keys <dataset>:<metric>, one table per test set (as transfer)
        per: dict[str, dict[str, float]] = {}
        for key, value in metrics.items():
            name, _, metric = key.rpartition(":")
            per.setdefault(reference_dataset(name or dataset), {})[metric] = value
        yield from ((name, values, ()) for name, values in per.items())
    elif protocol == "voc_transfer":   # VOC2007 classification/detection, VOC2012 segmentation: the task says
        yield reference_dataset((record.get("details") or {}).get("eval_dataset", dataset)), metrics, ()
    else:
        yield dataset, metrics, ()


def _version_reasons(record: dict[str, Any], current: dict[tuple[str, str], int | None]) -> tuple[str, ...]:
    """Why a record's preset version keeps it from the paper: it ran an older version (the preset has since been
    corrected) or a preset that no longer exists."""
    protocol, preset = str(record.get("protocol", "")), str(record.get("preset", ""))
    if (protocol, preset) not in current:
        try:
            current[protocol, preset] = preset_version(protocol, preset)
        except PresetError:
            current[protocol, preset] = None
    now, ran = current[protocol, preset], record.get("preset_version", 1)
    if now is None:
        return (f"preset {protocol}/{preset} no longer exists",)
    return (f"ran preset version {ran}, current is {now}",) if ran != now else ()


def measurements(records: list[dict[str, Any]]) -> list[Measured]:
    """Measured rows from records; records of the same checkpoint/preset/status share a row when their columns
    do not overlap (semisup 1% and 10% side by side), otherwise each gets its own row; a record of a run id the
    row already holds (the same run written twice) is folded into it."""
    rows: list[Measured] = []
    versions: dict[tuple[str, str], int | None] = {}
    for rec in sorted(records, key=lambda r: (r.get("protocol", ""), r.get("preset", ""), r.get("fingerprint", ""),
                                              str(r.get("checkpoint", {}).get("sha256")))):
        method, arch, ckpt, pretrain = _identity(rec)
        for dataset, values, extra in _pieces(rec):
            reasons = tuple(rec.get("not_comparable_because") or ()) + extra + _version_reasons(rec, versions)
            new = Measured(rec["protocol"], dataset, method, arch, ckpt, str(rec.get("preset", "")), reasons,
                           pretrain=pretrain)
            if any(r.key == new.key and record_run_id(rec) in r.run_ids and set(values) <= set(r.values)
                   for r in rows):
                continue    # the same run key recorded twice (e.g. by the CLI and the Python API): one row
            row = next((r for r in rows if r.key == new.key and not set(r.values) & set(values)), None)
            if row is None:
                rows.append(row := new)
            row.values.update(values)
            row.intervals.update(_piece_intervals(rec, dataset, values))
            row.run_ids.append(record_run_id(rec))
            row.records.append(rec)
    return rows


def _piece_intervals(rec: dict[str, Any], dataset: str, values: dict[str, float]) -> dict[str, tuple[float, float]]:
    """The record's bootstrap interval of each column (semisup's `top1@1%` is the record's `top1`; a transfer
    record's interval of a dataset is keyed by that dataset's name)."""
    out = {}
    own = [k for k in (rec.get("intervals") or {}) if rec.get("protocol") == "transfer" and reference_dataset(k) == dataset]
    for column in values:
        iv = record_interval(rec, column) or record_interval(rec, column.split("@")[0]) or \
            (record_interval(rec, own[0]) if own else None)
        if iv is not None:
            out[column] = iv
    return out


def build_tables(records: list[dict[str, Any]]) -> list[Table]:
    """Every (protocol, dataset) that has documented or measured numbers, sorted by protocol then dataset."""
    tables: dict[tuple[str, str], Table] = {}
    for d in documented_entries():
        tables.setdefault((d.protocol, d.dataset), Table(d.protocol, d.dataset, [], [])).documented.append(d)
    for m in measurements(records):
        tables.setdefault((m.protocol, m.dataset), Table(m.protocol, m.dataset, [], [])).measured.append(m)
    for t in tables.values():
        t.measured.sort(key=lambda m: (m.method, m.arch, m.checkpoint, m.preset, m.reasons, pretrain_text(m.pretrain),
                                       m.run_ids))
    return [tables[k] for k in sorted(tables)]


def _doc_rows(table: Table) -> list[tuple[tuple, dict[str, str], Documented]]:
    """Documented entries grouped into printed rows: (table, method, arch, setting), in reference order."""
    rows: dict[tuple, tuple[dict[str, str], Documented]] = {}
    for d in table.documented:
        key = (d.table, d.method, d.arch, d.preset, d.setting)
        rows.setdefault(key, ({}, d))[0].setdefault(d.metric, d.value)
    return [(k, cells, d) for k, (cells, d) in rows.items()]


@dataclass(frozen=True)
class DeltaPart:
    """One clause of the Δ cell: deltas against one documented row (`values`, empty when not compared) or why
    there are none (`compared` False). The site colours `values`; the tables print `text`."""
    text: str
    values: tuple[tuple[str, float], ...] = ()
    compared: bool = False


def delta_parts(m: Measured, table: Table) -> list[DeltaPart]:
    """The Δ of a measured row against each matching documented row, or why there is none. An ablation table's
    row (d.pretrain set) is met only by a checkpoint of one of its methods, arch, and the same pre-training
    setting (mapping.yaml `ablations`)."""
    candidates = [(cells, d) for _, cells, d in _doc_rows(table) if _method_arch_match(d, m)]
    matches = [(cells, d) for cells, d in candidates if pretrain_matches(d.pretrain, m.pretrain)]
    if m.reasons:    # first: a miniature row says so whether or not the paper has its (method, arch)
        return [DeltaPart("not compared: " + "; ".join(m.reasons))]
    if not matches and candidates:
        setting = pretrain_text(m.pretrain) or "no pre-training setting (checkpoints.yaml pretrain: / --ckpt-meta)"
        return [DeltaPart(f"no documented row for {m.method} {m.arch} pre-trained with {setting}")]
    if not matches:
        return [DeltaPart(f"no documented row for {m.method} {m.arch}".strip())]
    parts = []
    for cells, d in matches:
        if d.preset != m.preset:
            parts.append(DeltaPart(f"not compared with {d.table}: preset {m.preset}, documented {d.preset}"))
            continue
        values = tuple((c, m.values[c] - float(cells[c])) for c in cells if c in m.values)
        deltas = ", ".join(f"{c} {v:+.2f}{_where(m, c, cells[c])}" for c, v in values)
        parts.append(DeltaPart(f"{deltas} vs {d.table}", values, True) if values
                     else DeltaPart(f"no common metric with {d.table}"))
    return parts


def _where(m: Measured, column: str, documented: str) -> str:
    """' (inside the 95% interval; outside the protocol spread)': where the documented number lies relative to the
    measured row's bootstrap interval and, when `bench sensitivity` swept this checkpoint, its protocol spread."""
    doc = _number(documented)
    if doc is None:
        return ""
    notes = []
    if column in m.intervals:
        lo, hi = m.intervals[column]
        notes.append(f"{'inside' if lo <= doc <= hi else 'outside'} the 95% interval")
    if column in m.spreads:
        lo, hi = m.spreads[column]
        notes.append(f"{'inside' if lo <= doc <= hi else 'outside'} the protocol spread {lo:.2f}–{hi:.2f}")
    return f" ({'; '.join(notes)})" if notes else ""


def attach_spreads(tables: list[Table], sweeps: list[dict[str, Any]]) -> None:
    """Give each measured row the spread of the sensitivity sweeps (bench.sensitivity) of its checkpoint, preset
    and dataset: the sweep's checkpoint sha256 must be that of one of the row's records."""
    for t in tables:
        for m in t.measured:
            shas = {(r.get("checkpoint") or {}).get("sha256") for r in m.records} - {None}
            for s in sweeps:
                if (s.get("protocol"), s.get("preset")) == (m.protocol, m.preset) and \
                        (s.get("checkpoint") or {}).get("sha256") in shas and \
                        reference_dataset(s.get("dataset", "")) == m.dataset and "all" in (s.get("spread") or {}):
                    m.spreads[s["metric"]] = (s["spread"]["all"]["min"], s["spread"]["all"]["max"])


def _method_arch_match(d: Documented, m: Measured) -> bool:
    method = canonical_method(m.method)
    if d.match_methods:
        methods_ok = method in {canonical_method(x) for x in d.match_methods}
    else:
        methods_ok = bool(canonical_method(d.method)) and canonical_method(d.method) == method
    return methods_ok and arch_matches(d.arch if d.match_arch is None else d.match_arch, m.arch)


def delta_cell(m: Measured, table: Table) -> str:
    """The Δ column of a measured row: deltas vs each matching documented row, or why there are none."""
    return "; ".join(p.text for p in delta_parts(m, table))


def arch_group(arch: str | None) -> str:
    """The architecture group rows are kept together by: the canonical arch, a ViT by its size only (DINO prints
    'ViT-S' where a checkpoint says vit_small_patch16_224)."""
    key = canonical_arch(arch) or ""
    return key.split("/")[0] if key.startswith("vit-") else key


def ordered_rows(table: Table) -> list[tuple[dict[str, str], Documented] | Measured]:
    """Documented rows ((cells, Documented)) and measured rows (Measured) in print order: grouped by architecture,
    the groups by their best headline value, and within a group by the headline value (best first; descending,
    ascending for error rates), so a measured row sits beside the papers' rows of its arch that it compares with.
    Rows without a headline value close their group in reference order, documented before measured."""
    headline = table.headline
    sign = 1.0 if headline in LOWER_IS_BETTER else -1.0
    docs = [(cells, d) for _, cells, d in _doc_rows(table)]
    doc_groups = {arch_group(d.arch or d.match_arch): d.arch or d.match_arch for _, d in docs}
    items: list[tuple[str, float | None, tuple[dict[str, str], Documented] | Measured]] = []
    for cells, d in docs:
        items.append((arch_group(d.arch or d.match_arch), _number(cells.get(headline or "")), (cells, d)))
    for m in table.measured:
        # a measured arch joins the documented group it matches (ResNet-50 / RN50 / resnet50)
        group = next((g for g, printed in doc_groups.items() if g and arch_matches(printed, m.arch)),
                     arch_group(m.arch))
        items.append((group, m.values.get(headline or ""), m))
    best: dict[str, float] = {}
    for group, value, _ in items:
        if value is not None:
            best[group] = min(best.get(group, sign * value), sign * value)

    def key(i: int) -> tuple:
        group, value, _ = items[i]
        return (group not in best, best.get(group, 0.0), group, value is None,
                0.0 if value is None else sign * value, i)
    return [items[i][2] for i in sorted(range(len(items)), key=key)]


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def table_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and rows (all strings) in `ordered_rows` order; the metric columns headline first."""
    metrics = table.metric_columns()
    header = list(FIXED_COLUMNS) + metrics + list(TAIL_COLUMNS)
    rows = []
    for item in ordered_rows(table):
        if isinstance(item, Measured):
            m = item
            mini = "miniature" if any(r.get("dataset", {}).get("mini") for r in m.records) else ""
            setting = "; ".join(p for p in (mini, pretrain_text(m.pretrain)) if p)
            values = [interval_text(m.values[c], m.intervals.get(c)) if c in m.values else "" for c in metrics]
            rows.append(["measured", m.method, m.arch, m.checkpoint, m.preset, setting] + values
                        + [delta_cell(m, table), " ".join(m.run_ids)])
        else:
            cells, d = item
            ckpt = registered_for(d.table, d.method, d.arch, cells.values(), d.setting)
            rows.append([d.table, d.method, d.arch, ckpt, d.preset, d.setting]
                        + [cells.get(c, "") for c in metrics]
                        + ["", ""])
    return header, rows


def render_markdown(table: Table) -> str:
    header, rows = table_rows(table)
    papers = list(dict.fromkeys(f"`{d.table}` ({d.paper}; preset `{d.preset}`)" for d in table.documented))
    lines = [f"# {md_escape(table.protocol)} · {md_escape(table.dataset)}", ""]
    lines += [f"Documented rows: {', '.join(papers)}." if papers else "No documented rows for this pair.", ""]
    if papers:
        lines += ["A documented row's checkpoint names the checkpoints.yaml entries registered for it (`--ckpt NAME`; "
                  "`bench table --coverage` says which load and why others cannot).", ""]
    lines += ["Measured rows: run records (`record` = run id, the hash of settings + weights that ends the record's "
              "file name). Δ = measured − documented, given only for a comparable record run with the documented "
              "preset.", ""]
    lines += ["| " + " | ".join(_md(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    lines += _paper_footnote(table)
    return "\n".join(lines) + "\n"


def _paper_footnote(table: Table) -> list[str]:
    """Under a table with `paper:` rows: that they come from outside the slide set, and where each was read."""
    cites = dict.fromkeys((d.table, d.citation) for d in table.documented if d.outside_slides)
    if not cites:
        return []
    return ["", "Rows with source `paper:…` are the papers' own published numbers, outside the slide set "
            "(bench/reference/paper_rows.csv); a preset that is not a bench preset names the paper's own "
            "configuration, and no Δ is given against it."] + [f"- `{name}`: {_md(cite)}" for name, cite in cites]


def render_csv(table: Table) -> str:
    header, rows = table_rows(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["protocol", "dataset"] + header)
    writer.writerows([table.protocol, table.dataset] + row for row in rows)
    return buf.getvalue()


# SimCLR's transfer table (Kornblith et al.'s order): one row per method, one column per dataset
TRANSFER_DATASETS = ("food101", "cifar10", "cifar100", "birdsnap", "sun397", "cars", "aircraft", "voc2007", "dtd",
                     "pets", "caltech101", "flowers102")


def transfer_wide_rows(tables: list[Table]) -> tuple[list[str], list[list[str]]]:
    """The per-dataset transfer tables folded into SimCLR's layout: each documented or measured row once, its
    headline number (the dataset's documented metric) under each dataset, the mean over the datasets it has."""
    per = {t.dataset: t for t in tables if t.protocol == "transfer"}
    datasets = [d for d in TRANSFER_DATASETS if d in per] + sorted(set(per) - set(TRANSFER_DATASETS))
    rows: dict[tuple, dict[str, str]] = {}
    for ds in datasets:
        t = per[ds]
        metric = next((d.metric for d in t.documented), None)
        for key, cells, d in _doc_rows(t):
            rows.setdefault(("doc", d.table, d.method, d.arch, "", d.preset, d.setting), {})[ds] = cells[d.metric]
        for m in t.measured:
            value = m.values.get(metric) if metric else next(iter(m.values.values()), None)
            if value is not None:
                setting = "miniature" if any(r.get("dataset", {}).get("mini") for r in m.records) else ""
                key = ("measured", "measured", m.method, m.arch, m.checkpoint, m.preset, setting)
                rows.setdefault(key, {})[ds] = f"{value:.2f}"
    header = list(FIXED_COLUMNS) + datasets + ["mean (datasets present)"]
    out = []
    for key, cells in rows.items():
        vals = [float(v) for v in cells.values()]
        out.append(list(key[1:]) + [cells.get(d, "") for d in datasets] + [f"{sum(vals) / len(vals):.2f}"])
    return header, out


def _transfer_wide_files(tables: list[Table], results: Path) -> list[Path]:
    if not any(t.protocol == "transfer" for t in tables):
        return []
    header, rows = transfer_wide_rows(tables)
    md = ["# transfer · 12 datasets (SimCLR's table layout)", "",
          "Each dataset's documented metric (top-1, mean per-class accuracy or 11-point mAP); per-dataset tables "
          "with deltas: `transfer__<dataset>.md`.", "",
          "| " + " | ".join(_md(c) for c in header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header] + rows)
    return [atomic_write_text(results / "transfer__12datasets.md", "\n".join(md) + "\n"),
            atomic_write_text(results / "transfer__12datasets.csv", buf.getvalue())]


def write_tables(results: Path | str, *, plots: bool = True, out: Path | str | None = None) -> list[Path]:
    """Regenerate every table (and plot) from `results/runs/*.json` into `out` (default `results/`). Returns the
    paths written."""
    results = Path(results)
    out = results if out is None else Path(out)
    records = read_records(results, skip_bad=True)
    tables = build_tables(records)
    attach_spreads(tables, read_sweeps(results))
    written = []
    for t in tables:   # t.stem passed bench._text.safe_name; root= refuses anything that still points elsewhere
        written.append(atomic_write_text(out / f"{t.stem}.md", render_markdown(t), root=out))
        written.append(atomic_write_text(out / f"{t.stem}.csv", render_csv(t), root=out))
    written += _transfer_wide_files(tables, out)
    if plots:
        try:
            from .plots import write_plots
        except ModuleNotFoundError as e:    # matplotlib is the `plots` extra; the tables stand without it
            if e.name != "matplotlib":
                raise
            import logging
            logging.getLogger(__name__).warning("plots skipped: matplotlib is not installed "
                                                "(pip install 'bench[plots]')")
        else:
            written += write_plots(out, tables, records)
    written.append(atomic_write_text(out / "index.md", _index(tables, written, out)))
    return written


def read_sweeps(results: Path) -> list[dict[str, Any]]:
    import json
    folder = results / "sensitivity"
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            s = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(s, dict) and s.get("kind") == "sensitivity":
            out.append(s)
    return out


GENERATED_SUFFIXES = (".md", ".csv", ".png", ".svg")


def _looks_generated(path: Path) -> bool:
    """A file `bench table` writes: `index.md` or `<protocol>__<...>.<md|csv|png|svg>` (a README is not)."""
    return path.is_file() and path.suffix in GENERATED_SUFFIXES and (path.name == "index.md" or "__" in path.stem)


def check_tables(results: Path | str, *, plots: bool = True) -> list[str]:
    """What differs between the tables/plots in `results/` and what its records regenerate, one line per file
    (empty: they agree). Regenerates into a temporary folder; `results/` is not touched. Without `plots`, the
    figures are neither regenerated nor compared."""
    import tempfile
    results = Path(results)
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError:
            raise BenchError("bench table --check compares the plots too and needs matplotlib: "
                             "pip install 'bench[plots]' (or check the tables only with --no-plots)") from None
    with tempfile.TemporaryDirectory(prefix="bench-table-check-") as tmp:
        fresh = {p.name: p.read_bytes() for p in write_tables(results, plots=plots, out=tmp)}
    if not plots:    # the index lists the figures, which were not drawn
        fresh.pop("index.md")
    problems = []
    for name, data in sorted(fresh.items()):
        committed = results / name
        if not committed.is_file():
            problems.append(f"{committed}: missing (the records produce it)")
        elif committed.read_bytes() != data:
            problems.append(f"{committed}: differs from what the records regenerate")
    suffixes = GENERATED_SUFFIXES if plots else (".md", ".csv")
    for path in sorted(results.iterdir()):
        if _looks_generated(path) and path.suffix in suffixes and path.name not in fresh and \
                (plots or path.name != "index.md"):
            problems.append(f"{path}: no record produces it any more (stale)")
    return problems


def _index(tables: list[Table], written: list[Path], results: Path) -> str:
    lines = ["# Leaderboards", "", "Regenerated by `bench table` from the records in `runs/`.", "",
             "| protocol | dataset | documented | measured | table |", "|---|---|---|---|---|"]
    for t in tables:
        lines.append(f"| {_md(t.protocol)} | {_md(t.dataset)} | {len(_doc_rows(t))} | {len(t.measured)} | "
                     f"[{t.stem}.md]({t.stem}.md) |")
    figures = sorted(p.name for p in written if p.suffix == ".png")
    lines += ["", "Plots: " + (", ".join(f"[{f}]({f})" for f in figures) if figures else "none (no measured rows)")]
    lines += ["", "## Reference tables", "",
              "Every table of `bench/reference/data/` and where its documented rows are: the leaderboard file(s), "
              "the bench protocol(s) and the preset(s) that reproduce the paper's evaluation. Columns the "
              "leaderboards leave out say why (`bench/reference/mapping.yaml`).", "",
              "| reference table | paper | leaderboards | protocols | presets | not on a leaderboard |",
              "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in reference_index_rows(tables)]
    return "\n".join(lines) + "\n"


def reference_index_rows(tables: list[Table]) -> list[list[str]]:
    """One row per reference table (index.csv order): [table, paper, leaderboard files, protocols, presets, what is
    left off and why]. A table whose rows reach no leaderboard names its exclusion reason."""
    from .reference import reference_index, reference_mapping, reference_table
    mapping = reference_mapping()
    out = []
    for entry in reference_index():
        name = entry["file"].removesuffix(".csv")
        where = [t for t in tables if any(d.table == name for d in t.documented)]
        files = ", ".join(f"[{t.stem}.md]({t.stem}.md)" for t in where)
        protocols = ", ".join(dict.fromkeys(t.protocol for t in where))
        presets = ", ".join(dict.fromkeys(f"{d.protocol}/{d.preset}" for t in where for d in t.documented
                                          if d.table == name))
        mapped = (mapping["tables"].get(name) or {})
        left = sorted({r["protocol"] for r in reference_table(name)} - set(mapped))
        why = [f"{p}: {mapping['unmapped'].get(p) or 'not mapped for this table'}" for p in left]
        if name in mapping["excluded"]:
            why = [f"excluded: {mapping['excluded'][name]}"]
        out.append([f"`{name}`", entry["source_paper"], files or "none", protocols or "—", presets or "—",
                    "; ".join(why)])
    return out
