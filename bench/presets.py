"""Presets are data: `protocols/<protocol>.yaml` → a frozen dataclass, then `--set key=value` overrides.

Merge order: dataclass defaults < the YAML preset < CLI overrides. An unknown key is an error, and the resolved
preset (with the names of what was overridden) goes into the record.

Each preset has a `version` (1 when the YAML does not say): it is bumped whenever a field changes what the number
means, enters the record and its fingerprint, and a table compares a record with the paper only when it ran the
current version (`preset_version`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from ._yaml import read_yaml, yaml_error_line
from .errors import PresetError

__all__ = ["presets_dir", "check_choices", "check_ranges", "load_protocol_yaml", "resolve_preset", "parse_overrides", "preset_settings",
           "preset_version", "PRESET_META_FIELDS", "VERSION_KEY"]

# Provenance fields: they describe a preset but cannot move a number, so they stay out of fingerprints.
PRESET_META_FIELDS = ("paper", "source", "notes")
# A YAML-only key, kept off the dataclasses so every protocol (present and future) is versioned the same way.
VERSION_KEY = "version"


def check_choices(preset: Any, **allowed: tuple) -> None:
    """For a preset's __post_init__: each named field holds one of its allowed values (ValueError otherwise,
    which resolve_preset turns into a one-line preset error)."""
    for name, choices in allowed.items():
        if (value := getattr(preset, name)) not in choices:
            raise ValueError(f"{name} must be one of {choices}, not {value!r}")


# One range rule for every preset's numbers, by field name, so a new field is covered without a hand-written check:
# sizes, counts, rates and the like must be > 0 (batch_size=0 would scale the lr to 0 and train nothing, yet
# write a record); fractions, ratios, momenta and dropouts lie in [0, 1]; exponents, index lists and log ranges
# may be negative; every other number is >= 0 (iterations=0 is the untrained-head baseline). NaN and Inf are never
# valid.
_SIGNED = re.compile(r"(_exp|_range|indices|index)$")
_UNIT = re.compile(r"(fraction|ratio|momentum|dropout|drop_path)$")
_POSITIVE = re.compile(r"(^|_)(batch_size|epochs|lr|lrs|k|chunk|imsize|crop|crop_size|max_iter|c_num|"
                       r"temperature|size|sizes|stride|channels|n_lambda|scales|kappas|dim|gem_p|every|"
                       r"poly_power|images|per_image|resolution|pool_scales)$")


def check_ranges(preset: Any) -> None:
    """Every int/float field (and tuple of them) of `preset` is in the range its name implies (ValueError
    otherwise, naming the field and the allowed range)."""
    for f in dataclasses.fields(preset):
        value = getattr(preset, f.name)
        items = value if isinstance(value, tuple) else (value,)
        nums = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not nums:
            continue
        name = f.name
        if any(not math.isfinite(v) for v in nums):
            raise ValueError(f"{name} must be a finite number, not {value!r}")
        if _SIGNED.search(name):
            continue
        if _UNIT.search(name):
            ok, want = all(0 <= v <= 1 for v in nums), "in [0, 1]"
        elif _POSITIVE.search(name) and not name.startswith("warmup_"):
            ok, want = all(v > 0 for v in nums), "> 0"
        else:
            ok, want = all(v >= 0 for v in nums), ">= 0"
        if not ok:
            raise ValueError(f"{name} must be {want}, not {value!r}")


def presets_dir() -> Path:
    """$BENCH_PROTOCOLS, else the package's `_data/protocols` (in the repository a link to the top-level
    `protocols/`, the editable source; a wheel holds a copy)."""
    if env := os.environ.get("BENCH_PROTOCOLS"):
        return Path(env)
    return Path(__file__).resolve().parent / "_data" / "protocols"


def load_protocol_yaml(protocol: str) -> dict[str, Any]:
    if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", str(protocol)):   # a record's protocol never picks another file
        raise PresetError(f"{str(protocol)[:80]!r} is not a protocol name (letters, digits, _)")
    path = presets_dir() / f"{protocol}.yaml"
    if not path.is_file():
        raise PresetError(f"{path}: preset file for protocol {protocol!r} not found; is bench installed from its "
                          f"repository (pip install -e .) or $BENCH_PROTOCOLS set?")
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _YAML_CACHE:
        # the C safe loader when PyYAML has it: the Python one made `bench list presets` ~1 s
        data = read_yaml(path, PresetError)
        if not isinstance(data, dict) or not isinstance(data.get("presets"), dict):
            raise PresetError(f"{path}: expected a mapping with a 'presets' section")
        _YAML_CACHE[key] = data
    # callers may edit what they get; the cached parse stays as the file says
    return copy.deepcopy(_YAML_CACHE[key])


_YAML_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """['k=[10,20]', 'temperature=0.1'] → {'k': [10, 20], 'temperature': 0.1} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PresetError(f"--set {item!r}: expected key=value, e.g. --set temperature=0.1")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise PresetError(yaml_error_line(f"--set {item!r}", e).replace(":1:", ":", 1)) from None
    return out


def _coerce(cls: type, name: str, value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, str) and "," in value:       # --set k=10,20
            value = [yaml.safe_load(v) for v in value.split(",")]
        elif not isinstance(value, (list, tuple, dict)) and value is not None:
            value = [value]                                # --set k=10: a tuple of one
        if not isinstance(value, (list, tuple)):
            raise PresetError(f"{where}: {cls.__name__}.{name} is a list, got {value!r}; write it "
                              f"--set {name}=10,20 or --set {name}=[10,20]")
        inner = args[0] if args else Any
        try:
            return tuple(_coerce(cls, name, v, inner, where) for v in value)
        except PresetError as e:
            raise PresetError(f"{e} (a list of {getattr(inner, '__name__', inner)}: --set {name}=10,20 or "
                              f"--set {name}=[10,20])") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    check = origin or hint
    if isinstance(check, type) and check is not typing.Any and not isinstance(value, check):
        raise PresetError(f"{where}: {cls.__name__}.{name} must be {getattr(hint, '__name__', hint)}, "
                          f"got {value!r}")
    return value


def _version_of(protocol: str, name: str, body: dict[str, Any]) -> int:
    v = body.get(VERSION_KEY, 1)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise PresetError(f"{presets_dir() / (protocol + '.yaml')}:{name}: version must be an integer >= 1, "
                          f"not {v!r}")
    return v


def preset_version(protocol: str, name: str | None = None) -> int:
    """The current version of a preset (the YAML's `default` when `name` is None); 1 when the YAML has none."""
    data = load_protocol_yaml(protocol)
    name = name or data.get("default")
    if name not in data["presets"]:
        raise PresetError(f"unknown preset {name!r} for protocol {protocol!r}; choose one of: "
                          f"{', '.join(sorted(data['presets']))}")
    return _version_of(protocol, name, data["presets"][name] or {})


def resolve_preset(protocol: str, cls: type, name: str | None, overrides: dict[str, Any] | None = None):
    """(preset instance, preset name) for `protocol`; the YAML's `default` when `name` is None."""
    data = load_protocol_yaml(protocol)
    name = name or data.get("default")
    if name not in data["presets"]:
        raise PresetError(f"unknown preset {name!r} for protocol {protocol!r}; choose one of: "
                          f"{', '.join(sorted(data['presets']))}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    body = dict(data["presets"][name] or {})
    _version_of(protocol, name, body)
    body.pop(VERSION_KEY, None)
    if VERSION_KEY in (overrides or {}):
        raise PresetError(f"--set {VERSION_KEY}=...: a preset's version is not a setting; edit "
                          f"protocols/{protocol}.yaml (and bump its version) to change a preset")
    for where, layer in ((f"protocols/{protocol}.yaml:{name}", body), ("--set", overrides or {})):
        unknown = sorted(set(layer) - fields)
        if unknown:
            raise PresetError(f"{where}: unknown key(s) {unknown} for {protocol}; known: {sorted(fields)}")
        values.update({k: _coerce(cls, k, v, hints[k], where) for k, v in layer.items()})
    try:
        preset = cls(**values)
        check_ranges(preset)
    except (TypeError, ValueError) as e:
        bad = [k for k in (overrides or {}) if re.match(rf"{re.escape(k)}\b", str(e))]
        # the preset file alone is valid, so with --set given the clash is theirs (k=10 against headline_k=20)
        where = (f"--set {bad[0]}={overrides[bad[0]]!r}" if bad else
                 "--set " + " ".join(f"{k}={v!r}" for k, v in overrides.items()) if overrides else
                 f"protocols/{protocol}.yaml:{name}")
        raise PresetError(f"{where}: {e}") from e
    return preset, name


def preset_settings(preset: Any) -> dict[str, Any]:
    """The fields that can move a number (provenance fields left out), for fingerprints."""
    return {k: v for k, v in dataclasses.asdict(preset).items() if k not in PRESET_META_FIELDS}
