"""pyproject's dependencies are exactly the third-party modules bench imports (optional ones as extras)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name → distribution name, where they differ
DIST = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml", "faiss": "faiss-cpu",
        "cv2": "opencv-contrib-python", "av": "av"}
# imported only to say "install it yourself" (heavy, platform-specific builds): protocols check and name them
EXTERNAL = {"detectron2", "mmseg"}


def _imported() -> tuple[set[str], set[str]]:
    """(modules imported at module top level, modules imported only inside functions) across bench/."""
    top, inner = set(), set()
    for path in (ROOT / "bench").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bucket = top if node in tree.body else inner
            bucket.update(n.split(".")[0] for n in names)
    return {m for m in top if m not in sys.stdlib_module_names}, {m for m in inner if m not in sys.stdlib_module_names}


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_dependencies_match_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = _names(project["dependencies"])
    extras = set().union(*(_names(v) for k, v in project["optional-dependencies"].items() if k != "test"))
    top, inner = _imported()
    used = {DIST.get(m, m).lower() for m in (top | inner) - EXTERNAL - {"bench"}}
    assert not (used - required - extras), f"imported, not declared: {sorted(used - required - extras)}"
    assert not (required - used), f"declared, never imported: {sorted(required - used)}"
    # a module-level import of an extra would break `import bench.x` for everyone without it
    lazy_ok = {"matplotlib"}   # bench.plots is imported only by tables.write_tables, which handles its absence
    top_extras = {DIST.get(m, m).lower() for m in top} & (extras - required) - lazy_ok
    assert not top_extras, f"extras imported at module level: {sorted(top_extras)}"
