"""Property-based (Hypothesis): records with arbitrary text in every free-text field — protocol, preset, names,
notes, metric names, settings — never make `bench table`, `bench table --check` or `bench site` write outside
their output roots, break a Markdown table's rows, or put markup of their own into a page."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.records import write_record
from test_hardening import assert_rectangular

PAYLOADS = ["../../../../x", "sub/../../y", "/abs/z", "..", ".", "a|b", "a\nb", "a\r\nb|c", "x\u2028y", "\\", "\\|",
            "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>',
            "javascript:alert(1)", "$\\frac{", "$x$", "&amp;", "# heading", "`code`", "", " ", "knn", "top1"]
TEXT = st.one_of(st.sampled_from(PAYLOADS), st.text(max_size=24),
                 st.lists(st.sampled_from(PAYLOADS), min_size=2, max_size=3).map("".join))
METRIC = st.one_of(st.sampled_from(["top1", "top1_k10", "top1_k20", "top5"]), TEXT)
VALUE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@st.composite
def records(draw) -> dict:
    protocol = draw(st.one_of(st.sampled_from(["knn", "linear", "semisup", "transfer"]), TEXT))
    metrics = draw(st.dictionaries(METRIC, VALUE, min_size=1, max_size=4))
    return {"protocol": protocol, "preset": draw(TEXT), "metrics": metrics, "headline": [draw(METRIC)],
            "comparable": draw(st.booleans()), "not_comparable_because": draw(st.lists(TEXT, max_size=2)),
            "checkpoint": {"name": draw(TEXT), "arch": draw(TEXT), "family": draw(TEXT), "sha256": draw(TEXT)},
            "dataset": {"name": draw(TEXT), "mini": draw(st.booleans())},
            "preset_settings": {draw(TEXT): draw(TEXT)}, "details": {"note": draw(TEXT), "eval_dataset": draw(TEXT)},
            "pretrain": {draw(TEXT): draw(TEXT)}, "fingerprint": "0" * 16}


ALLOWED_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "nav", "a", "h1", "p", "code", "form",
                "label", "select", "option", "span", "table", "thead", "tr", "th", "button", "tbody", "td", "figure",
                "img", "figcaption", "div", "br"}


class _Markup(HTMLParser):
    """Collects what a page's markup does: tags, script sources, event-handler attributes, link targets."""
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"attribute {name}")
            if name in ("href", "src") and value and (":" in value.split("/")[0] or value.startswith("/")):
                self.problems.append(f"{name}={value!r}")
        if tag == "script" and dict(attrs).get("src") != "site.js":
            self.problems.append("inline <script>")


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.filterwarnings("ignore")
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recs=st.lists(records(), min_size=1, max_size=3))
def test_arbitrary_record_text_stays_inside_the_output_roots(tmp_path_factory, recs):
    base = tmp_path_factory.mktemp("fuzz")
    results = base / "a" / "b" / "results"
    for i, rec in enumerate(recs):
        write_record({**rec, "run_id": f"r{i}"}, results / "runs" / f"r{i}.json")
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    before = {p for p in base.rglob("*")} - {p for p in results.rglob("*")}

    assert main(["table", "--results", str(results)]) == 0
    tables = _snapshot(results)
    assert main(["table", "--results", str(results), "--check"]) == 0     # regenerates into a temp folder only
    assert _snapshot(results) == tables
    assert main(["site", "--results", str(results)]) == 0

    assert {p for p in base.rglob("*")} - {p for p in results.rglob("*")} == before, "written outside results/"
    assert (outside / "keep.txt").read_text() == "keep"
    for md in results.glob("*.md"):
        assert_rectangular(md.read_text(), md.name)
    for page in (results / "site").glob("*.html"):
        parser = _Markup()
        parser.feed(page.read_text())
        assert not parser.problems, f"{page.name}: {parser.problems[:3]}"
    for path in (results / "site" / "runs").glob("*.json"):
        json.loads(path.read_text())
