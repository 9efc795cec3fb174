"""The schema a run record must meet before a table, the site or `bench.results.load` reads it.

Records come from other people (pull requests, shared folders), so every field a table reads is checked for its
type, its length and its characters, once, here. A record that fails is left out with one line naming it and the
field; nothing downstream sees a number where a name should be, a 200 KB name, or a lone surrogate that no UTF-8
file can hold. Markup characters (`|`, `<`, `$`, newlines) are allowed: the writers escape them (bench._text).
"""
from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["record_problem", "NAME_LIMIT", "TEXT_LIMIT", "MAX_DEPTH", "MAX_RECORD_BYTES"]

NAME_LIMIT = 200          # a name a table prints: protocol, preset, dataset, checkpoint, metric, a reason
TEXT_LIMIT = 20_000       # any other string in the record
MAX_DEPTH = 40            # nesting of mappings/lists (bench's own records nest ~6 deep)
MAX_RECORD_BYTES = 16 << 20
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# (field, type, required); a None value of an optional field means "absent"
_TOP = (("protocol", str, True), ("preset", str, True), ("metrics", dict, True), ("checkpoint", dict, True),
        ("dataset", dict, True), ("preset_version", int, False), ("headline", list, False),
        ("comparable", bool, False), ("not_comparable_because", list, False), ("preset_settings", dict, False),
        ("details", dict, False), ("run_key", dict, False), ("pretrain", dict, False), ("fingerprint", str, False),
        ("run_id", str, False))
_NAMES = {"checkpoint": ("name", "arch", "family", "sha256", "registry_name"), "dataset": ("name",),
          "details": ("eval_dataset",)}
_ID = re.compile(r"[A-Za-z0-9_.:+-]{0,80}")    # run ids and fingerprints: printed and linked


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _name_problem(where: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"{where} must be a string, not {_type_name(value)}"
    if len(value) > NAME_LIMIT:
        return f"{where} is {len(value)} characters long (at most {NAME_LIMIT})"
    return None


def _walk_problem(value: Any, where: str, depth: int = 0) -> str | None:
    """Any string too long or not encodable as UTF-8, nesting too deep, a non-JSON type, anywhere in `value`."""
    if depth > MAX_DEPTH:
        return f"{where} nests deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if len(value) > TEXT_LIMIT:
            return f"{where} holds a string of {len(value)} characters (at most {TEXT_LIMIT})"
        if _SURROGATE.search(value):
            return f"{where} holds a lone surrogate (not valid Unicode text)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if problem := _walk_problem(k, f"{where} key", depth + 1) or _walk_problem(v, f"{where}.{k}"[:80],
                                                                                       depth + 1):
                return problem
        return None
    if isinstance(value, list):
        return next((p for v in value if (p := _walk_problem(v, where, depth + 1))), None)
    if value is None or isinstance(value, (bool, int, float)):
        return None
    return f"{where} holds a {_type_name(value)}"


def record_problem(rec: Any) -> str | None:
    """What makes a parsed record unusable for tables, in a few words naming the field, or None when it is fine."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if problem := _walk_problem(rec, "record"):
        return problem
    for key, kind, required in _TOP:
        value = rec.get(key)
        if value is None and not required:
            continue
        if not _is(value, kind):
            return f"'{key}' must be a {kind.__name__}, not {_type_name(value)}"
    for key in ("protocol", "preset"):
        if problem := _name_problem(f"'{key}'", rec[key]):
            return problem
    for block, names in _NAMES.items():
        for name in names:
            value = (rec.get(block) or {}).get(name)
            if value is not None and (problem := _name_problem(f"'{block}.{name}'", value)):
                return problem
    if (mini := rec["dataset"].get("mini")) is not None and not isinstance(mini, bool):
        return f"'dataset.mini' must be true or false, not {_type_name(mini)}"
    for key in ("run_id", "fingerprint"):
        if rec.get(key) is not None and not _ID.fullmatch(rec[key]):
            return f"'{key}' must be up to 80 letters, digits and _.:+- characters"
    for key in ("not_comparable_because", "headline"):
        for item in rec.get(key) or ():
            if problem := _name_problem(f"an item of '{key}'", item):
                return problem
    return _metrics_problem(rec["metrics"])


def _metrics_problem(metrics: dict[str, Any]) -> str | None:
    bad = [k for k, v in metrics.items() if not (_is(v, int) or _is(v, float))]
    if bad:
        return f"metric(s) {[k[:40] for k in bad[:3]]} are not numbers"
    if any(math.isinf(v) for v in metrics.values()):
        return "a metric is infinite"
    return next((p for k in metrics if (p := _name_problem("a metric name", k))), None)
