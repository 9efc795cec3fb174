"""The papers' results tables as bench's own reference data, and how they meet bench's protocols.

`data/` holds the long-format CSVs (one documented number per row, `value` kept as the printed string) and
`index.csv` (title, paper, seed lines of each table); the vocabulary is documented in `data/README.md`.
`mapping.yaml` says which reference protocol is which bench protocol, which tables feed the leaderboards and
with which preset. Values stay strings end to end so a table shows exactly what the paper printed.
"""
from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .._text import md_escape
from ..errors import BenchError

__all__ = ["DATA_DIR", "Documented", "paper_rows", "reference_index", "reference_table", "reference_mapping",
           "documented_entries", "pretrain_value", "parse_ablation_setting", "pretrain_matches", "table_entry", "render_reference_table",
           "canonical_method", "canonical_arch", "reference_dataset", "load"]

DATA_DIR = Path(__file__).resolve().parent / "data"
MAPPING_PATH = Path(__file__).resolve().parent / "mapping.yaml"
# the papers' own published numbers for default presets the slide set has no row for, each with its citation
PAPER_ROWS_PATH = Path(__file__).resolve().parent / "paper_rows.csv"
PAPER_PREFIX = "paper:"


@dataclass(frozen=True)
class Documented:
    """One documented number, placed on bench's (protocol, dataset) grid."""
    table: str          # reference table name (CSV stem)
    paper: str
    protocol: str       # bench protocol
    preset: str         # bench preset that reproduces the paper's evaluation
    dataset: str        # reference dataset name
    metric: str         # column label, e.g. top1 or top1@1% (semisup)
    method: str         # as printed
    arch: str
    setting: str        # split_or_setting as printed
    value: str          # as printed
    row: int            # row number in the CSV (for stable ordering)
    # ablation tables (mapping.yaml `ablations`): the pre-training setting this row documents, as sorted
    # (key, value) pairs (None: not an ablation row), the arch a measured row must have (None: `arch`), and the
    # canonical methods whose checkpoints meet the row (empty: the printed method's)
    pretrain: tuple[tuple[str, Any], ...] | None = None
    match_arch: str | None = None
    match_methods: tuple[str, ...] = ()
    # a paper's own number from outside the slide set (paper_rows.csv): where it was read (repo@commit:file#lines)
    citation: str = ""

    @property
    def outside_slides(self) -> bool:
        return bool(self.citation)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise BenchError(f"{path}: reference table not found; reinstall bench (pip install -e .)")
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@functools.lru_cache(maxsize=None)
def reference_index() -> tuple[dict[str, str], ...]:
    return tuple(_read_csv(DATA_DIR / "index.csv"))


@functools.lru_cache(maxsize=None)
def reference_table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of one reference table (`name` without .csv), every field a string as in the CSV."""
    return tuple(_read_csv(DATA_DIR / f"{name}.csv"))


@functools.lru_cache(maxsize=None)
def reference_mapping() -> dict:
    try:
        data = yaml.safe_load(MAPPING_PATH.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise BenchError(f"{MAPPING_PATH}: unreadable reference mapping ({e})") from e
    for key in ("protocols", "tables", "unmapped", "excluded", "datasets", "methods", "ablations", "ours"):
        data.setdefault(key, {})
    return data


def reference_dataset(name: str) -> str:
    """A bench dataset name in the reference vocabulary (identity unless mapping.yaml aliases it)."""
    return reference_mapping()["datasets"].get(name, name)


def canonical_method(label: str | None) -> str | None:
    """'MoCov2 [15]', 'MoCo v2', 'mocov2' → 'mocov2'; 'SCLR [12]' → 'simclr'. None when it cannot match."""
    if not label:
        return None
    s = re.sub(r"\[[^\]]*\]|\(ours\)", "", label.lower())
    s = re.sub(r"[^a-z0-9]+", "", s)
    aliases = reference_mapping()["methods"]
    return aliases[s] if s in aliases else (s or None)


_VIT_SIZES = {"tiny": "t", "small": "s", "base": "b", "large": "l", "huge": "h", "giant": "g"}


def canonical_arch(arch: str | None) -> str | None:
    """Printed or timm architecture → one spelling: 'RN50'/'ResNet-50'/'resnet50' → 'resnet50',
    'ResNet-50 (2×)'/'RN50w2' → 'resnet50w2', 'ViT-S/16'/'vit_small_patch16_224' → 'vit-s/16', 'ViT-S' → 'vit-s'."""
    if not arch:
        return None
    s = arch.lower().replace("×", "x").replace(" ", "").removeprefix("tv:").removeprefix("timm/")
    if m := re.match(r"vit_(tiny|small|base|large|huge|giant)_patch(\d+)", s):
        return f"vit-{_VIT_SIZES[m[1]]}/{m[2]}"
    if m := re.fullmatch(r"vit-([tsblhg])(?:/(\d+))?", s):
        return f"vit-{m[1]}" + (f"/{m[2]}" if m[2] else "")
    if m := re.fullmatch(r"(?:resnet|rn|r)-?(\d+)(?:w(\d+)x?|\((\d+)x\))?", s):
        width = m[2] or m[3]
        return f"resnet{m[1]}" + (f"w{width}" if width and width != "1" else "")
    if m := re.fullmatch(r"vgg-?(\d+)(?:_bn)?", s):
        return f"vgg{m[1]}"
    return re.sub(r"[^a-z0-9/]+", "", s) or None


def arch_matches(documented: str | None, measured: str | None) -> bool:
    """Same canonical arch; a documented ViT without patch size ('ViT-S' in DINO's table) matches any patch."""
    d, m = canonical_arch(documented), canonical_arch(measured)
    if not d or not m:
        return False
    return d == m or (d.startswith("vit-") and "/" not in d and m.split("/")[0] == d)


def preset_for(value: str | dict[str, str], arch: str | None, dataset: str | None = None,
               resolution: str | None = None) -> str:
    """The preset of a mapping entry: one name, or {default: name, <canonical arch>: name} for papers whose
    protocol changes with the architecture (a pattern without patch size matches every patch size);
    `dataset:<name>` and `resolution:<px>` keys pick the row's evaluation dataset or input size first (BEiT's
    CIFAR-100 column, DeiT's and BEiT's 384-px rows)."""
    if isinstance(value, str):
        return value
    for key, have in (("dataset", dataset), ("resolution", resolution)):
        if have and f"{key}:{have}" in value:
            return value[f"{key}:{have}"]
    for pattern, name in value.items():
        if ":" in str(pattern):
            continue
        if pattern != "default" and arch_matches(pattern, arch):
            return name
    return value["default"]


def table_entry(target: dict, value) -> tuple[dict, str | dict, dict[str, str]]:
    """(bench target, preset value, columns) of one table's mapping entry. A table may measure a reference protocol
    with another bench protocol than the global one ({protocol, preset, columns}: DeepCluster's and Jigsaw++'s
    `voc07_detection` is Fast R-CNN, not the detection protocol); `columns` lifts split_or_setting values into
    metric columns of one record (Jigsaw++'s SS / MS → mAP / mAP_ms)."""
    if isinstance(value, dict) and "protocol" in value:
        return {"protocol": value["protocol"]}, value["preset"], dict(value.get("columns") or {})
    return target, value, {}


@functools.lru_cache(maxsize=None)
def documented_entries() -> tuple[Documented, ...]:
    """Every numeric documented value of the leaderboard tables, on bench's grid, in index then row order."""
    mapping = reference_mapping()
    papers = {r["file"].removesuffix(".csv"): r["source_paper"] for r in reference_index()}
    out = []
    for table in (r["file"].removesuffix(".csv") for r in reference_index()):
        presets = mapping["tables"].get(table)
        if not presets:
            continue
        extra = _distinguishing(reference_table(table))
        for i, row in enumerate(reference_table(table)):
            target = mapping["protocols"].get(row["protocol"])
            if row["protocol"] not in presets or not target or not row["value"]:
                continue
            target, entry, columns = table_entry(target, presets[row["protocol"]])
            # A setting the mapping lifts into the column (label fraction, conv layer, Jigsaw++'s SS / MS) no longer
            # tells rows apart.
            lifted = target.get("setting") or target.get("column") == "setting" or row["split_or_setting"] in columns
            setting = "" if lifted else row["split_or_setting"]
            if target["protocol"] == "finetune":
                setting = _finetune_setting(row, setting)
            metric = columns.get(row["split_or_setting"]) or (
                row["metric"] + (f"@{target['setting']}" if target.get("setting") else ""))
            if target.get("column") == "setting":     # conv3 → top1_conv3, the layers protocol's metric
                metric += f"_{row['split_or_setting']}"
                # a method printed twice (Jenni's "Ours" and "Ours†") stays two rows: its footnote marker
                setting = row["markers"].removeprefix("method:")
            if extra[i]:    # printed twice with the same key (SimCLR at batch 256 and 8192): say what differs
                setting = "; ".join(p for p in (setting, extra[i]) if p)
            ablation = _ablation_fields(table, row, mapping["ablations"].get(table))
            out.append(Documented(table, papers.get(table, ""), target["protocol"],
                                  preset_for(entry, row["arch"], row["dataset"], row["resolution"]),
                                  row["dataset"], metric, row["method"], row["arch"], setting, row["value"], i,
                                  **ablation))
    return tuple(out) + paper_rows()


_PAPER_COLUMNS = ("name", "protocol", "preset", "dataset", "metric", "method", "arch", "setting", "value", "paper",
                  "citation")


@functools.lru_cache(maxsize=None)
def paper_rows() -> tuple[Documented, ...]:
    """The rows of paper_rows.csv: numbers read in a paper's own repository (README tables) for protocols whose
    default preset the slide set documents nothing for. Their source is `paper:<name>` and each carries its
    citation; a preset that is not a bench preset (the paper's own config) names it, so no Δ is ever printed
    against a run it does not describe."""
    rows = _read_csv(PAPER_ROWS_PATH)
    out = []
    for i, row in enumerate(rows):
        missing = [c for c in _PAPER_COLUMNS if not (row.get(c) or "").strip() and c != "setting"]
        if missing:
            raise BenchError(f"{PAPER_ROWS_PATH}: row {i + 2} lacks {missing}; every paper row needs a value, "
                             f"a paper and a citation")
        try:
            float(row["value"])
        except ValueError:
            raise BenchError(f"{PAPER_ROWS_PATH}: row {i + 2}: value {row['value']!r} is not a number") from None
        out.append(Documented(PAPER_PREFIX + row["name"], row["paper"], row["protocol"], row["preset"],
                              row["dataset"], row["metric"], row["method"], row["arch"], row["setting"],
                              row["value"], i, citation=row["citation"]))
    return tuple(out)


_SAME_ROW = ("method", "arch", "protocol", "dataset", "metric", "split_or_setting")
_TELLS_APART = (("epochs", "{} epochs"), ("batch_size", "batch {}"), ("pretrain_data", "pre-trained on {}"),
                ("resolution", "{} px"), ("markers", "{}"))


def _distinguishing(rows: tuple[dict[str, str], ...]) -> list[str]:
    """Per row: for rows that share method, arch, protocol, dataset, metric and setting with another row of the
    table, the printed columns that tell them apart ('200 epochs; batch 8192'); '' for every other row, so a
    leaderboard never folds two printed rows into one."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(tuple(row[k] for k in _SAME_ROW), []).append(i)
    out = [""] * len(rows)
    for members in groups.values():
        if len(members) < 2:
            continue
        differ = [(col, fmt) for col, fmt in _TELLS_APART if len({rows[i][col] for i in members}) > 1]
        for i in members:
            # a footnote marker on the printed method (Jigsaw++'s "Context [7]" and "Context [7]*") is what is left
            out[i] = "; ".join(fmt.format(rows[i][col]).replace("method:", "method marked ") for col, fmt in differ
                               if rows[i][col])
    return out


def pretrain_value(value: Any) -> Any:
    """One spelling per pre-training setting value: yes/true/w/ → True, no/false/w/o → False, numbers as floats,
    other text lower-case alphanumerics ('Non-Param Softmax' → 'nonparamsoftmax')."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    if text in ("yes", "true", "y", "on", "✓", "w/"):
        return True
    if text in ("no", "false", "n", "off", "×", "w/o"):
        return False
    try:
        return float(text)
    except ValueError:
        return re.sub(r"[^a-z0-9]+", "", text)


def parse_ablation_setting(row: dict[str, str], rules: list[dict]) -> dict[str, Any] | None:
    """The pre-training setting of a reference row under a table's `ablations` rules: every rule whose `match`
    regex is found in the row's `from` column (default split_or_setting) adds its named groups and its fixed
    `set` values; `columns` adds reference columns (epochs) when printed. None when nothing matches."""
    out: dict[str, Any] = {}
    for rule in rules:
        m = re.search(rule["match"], row.get(rule.get("from", "split_or_setting"), ""))
        if m:
            out.update({k: pretrain_value(v) for k, v in m.groupdict().items() if v is not None})
            out.update({k: pretrain_value(v) for k, v in (rule.get("set") or {}).items()})
    if not out:     # a baseline row of the table (supervised): not an ablation setting
        return None
    for column in {c for rule in rules for c in rule.get("columns", ())}:
        if row.get(column):
            out[{"batch_size": "batch"}.get(column, column)] = pretrain_value(row[column])
    return out or None


def _ablation_fields(table: str, row: dict[str, str], spec: dict | None) -> dict[str, Any]:
    """Documented's ablation fields for one row of an ablation table (mapping.yaml `ablations`), else {}."""
    if not spec:
        return {}
    setting = parse_ablation_setting(row, spec.get("rules", []))
    # the arch a measured row needs: the paper's own (MoCo's ablations are R50 though the slide prints none);
    # a printed arch the map leaves out (R50-dilated-C5: no bench preset) is never compared
    arch = (spec.get("arch") or {}).get(row["arch"], "")
    if setting is None:
        return {"match_arch": arch}
    return {"pretrain": tuple(sorted(setting.items())), "match_arch": arch,
            "match_methods": tuple(spec.get("methods") or ())}


def pretrain_matches(documented: tuple[tuple[str, Any], ...] | None, measured: dict[str, Any] | None) -> bool:
    """A measured checkpoint meets an ablation row when it has every key of the row's setting with the same value
    (numbers within 1e-9). A row that is not an ablation setting (None) meets any checkpoint."""
    if documented is None:
        return True
    if not measured:
        return False
    have = {k: pretrain_value(v) for k, v in measured.items()}
    for key, want in documented:
        got = have.get(key)
        if isinstance(want, float) and isinstance(got, float):
            if abs(want - got) > 1e-9:
                return False
        elif got != want or type(got) is not type(want):
            return False
    return True


def _finetune_setting(row: dict[str, str], setting: str) -> str:
    """Fine-tuning tables print one method at several input sizes, pre-training sets, epochs and sections (MILAN,
    MAE, BEiT): those columns join the setting so each documented row stays a row of its own."""
    parts = [setting] if setting else []
    if row["resolution"] and row["resolution"] not in setting:
        parts.append(f"{row['resolution']} px")
    if row["pretrain_data"]:
        parts.append(f"pre-trained on {row['pretrain_data']}")
    if row["epochs"]:
        parts.append(f"{row['epochs']} pre-training epochs")
    if row["section"]:
        parts.append(row["section"])
    return "; ".join(parts)


def load():
    """The documented numbers of the leaderboards as a DataFrame in `bench.results.load`'s shape: `source` is the
    reference table, `paper` its citation, `value` the printed number as a float, `preset` the bench preset that
    reproduces the paper's evaluation; `comparable` is True (these are the papers' own numbers) and the
    record columns are empty."""
    from .._frames import dataframe
    return dataframe([{"source": d.table, "protocol": d.protocol, "preset": d.preset, "dataset": d.dataset,
                       "metric": d.metric, "value": float(d.value), "method": d.method, "arch": d.arch,
                       "backbone": "", "setting": d.setting, "comparable": True, "reasons": "", "fingerprint": "",
                       "run_id": "", "record": "", "paper": d.paper, "method_key": canonical_method(d.method),
                       "arch_key": canonical_arch(d.arch)} for d in documented_entries()])


_KEY_COLUMNS = ("method", "arch", "pretrain_data", "epochs", "resolution", "section", "split_or_setting")


def render_reference_table(name: str) -> str:
    """A reference table back as Markdown: one row per printed row, one column per protocol/dataset/metric.
    Cells show `value` as printed, or the flag for a value that was not printed."""
    rows = reference_table(name)
    columns: list[tuple[str, str, str]] = []
    body: dict[tuple, dict[tuple, str]] = {}
    for row in rows:
        col = (row["protocol"], row["dataset"], row["metric"])
        if col not in columns:
            columns.append(col)
        body.setdefault(tuple(row[k] for k in _KEY_COLUMNS), {})[col] = row["value"] or f"({row['flag']})"
    keys = [k for k in _KEY_COLUMNS if any(row[k] for row in rows)]
    head = keys + ["/".join(c for c in col if c) for col in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, cells in body.items():
        label = [_md(v) for k, v in zip(_KEY_COLUMNS, key) if k in keys]
        lines.append("| " + " | ".join(label + [_md(cells.get(col, "")) for col in columns]) + " |")
    return "\n".join(lines) + "\n"


_md = md_escape   # the one Markdown escaper (bench._text)
