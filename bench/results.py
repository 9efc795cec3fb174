"""Records as a pandas DataFrame for notebooks: `bench.results.load("results")`, one row per metric.

The rows are on the leaderboards' grid (the same dataset names and metric columns as `bench table`: semisup
metrics carry their label fraction, `top1@1%`; a transfer record gives one row per dataset under that dataset's
documented metric), so they join with `bench.reference.load()`, which has the same columns. `method_key` and
`arch_key` are the canonical spellings the tables match on ('MoCo v2' and 'mocov2' → 'mocov2', 'ResNet-50' and
'resnet50' → 'resnet50').
"""
from __future__ import annotations

from pathlib import Path

from ._frames import COLUMNS, dataframe
from .errors import BenchError

__all__ = ["COLUMNS", "load", "dataframe"]


def load(results: str | Path = "results"):
    """Every record under RESULTS/runs/ as a DataFrame, one row per (record, table, metric): `source` 'measured',
    `comparable` and `reasons` from the record, `fingerprint` the full settings hash, `run_id` the run's stable id
    (settings + weights), `record` the JSON's file name, `setting` 'miniature' for a record on the miniatures. Unreadable records are skipped with a warning."""
    from .records import record_files, record_run_id
    from .reference import canonical_arch, canonical_method
    from .tables import _identity, _pieces, pretrain_text
    results = Path(results)
    if not (results / "runs").is_dir():
        raise BenchError(f"{results}: no runs/ folder of records; pass the results folder (`bench run --out`)")
    rows = []
    for path, rec in record_files(results, skip_bad=True):
        method, arch, name, pretrain = _identity(rec)
        mini = bool((rec.get("dataset") or {}).get("mini"))
        setting = "; ".join(p for p in ("miniature" if mini else "", pretrain_text(pretrain)) if p)
        for dataset, values, extra in _pieces(rec):
            reasons = tuple(rec.get("not_comparable_because") or ()) + extra
            for metric, value in values.items():
                rows.append({"source": "measured", "protocol": rec["protocol"], "preset": rec["preset"],
                             "dataset": dataset, "metric": metric, "value": value, "method": method, "arch": arch,
                             "backbone": name, "setting": setting,
                             "comparable": bool(rec.get("comparable")) and not reasons,
                             "reasons": "; ".join(reasons), "fingerprint": str(rec.get("fingerprint", "")),
                             "run_id": record_run_id(rec), "record": path.name, "paper": "",
                             "method_key": canonical_method(method),
                             "arch_key": canonical_arch(arch)})
    return dataframe(rows)
