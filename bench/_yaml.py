"""Every YAML file bench reads (presets, expectations, checkpoints.yaml) goes through `read_yaml`: the safe loader
(C when PyYAML has it), and one line naming the file and the line for anything wrong, a `!!python/...` tag included.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_yaml", "yaml_error_line"]


def yaml_error_line(path: str | os.PathLike, e: yaml.YAMLError) -> str:
    """'FILE:LINE: what' from PyYAML's multi-line error; a Python tag says it is refused and why."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = " ".join(str(getattr(e, "problem", None) or e).split())
    if "tag:yaml.org,2002:python/" in problem:
        tag = problem.split("tag:yaml.org,2002:", 1)[1].split("'")[0]
        return f"{where}: tag !!{tag} refused (YAML here is data; tags that build Python objects could run code)"
    context = " ".join(str(getattr(e, "context", None) or "").split())
    return f"{where}: invalid YAML ({f'{context}: ' if context else ''}{problem})"


def read_yaml(path: str | os.PathLike, error: type[Exception]) -> Any:
    """The data in `path`; `error` (one line: file, line, problem) for an unreadable file or invalid YAML."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: unreadable ({e})") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise error(yaml_error_line(path, e)) from None
    finally:
        loader.dispose()
