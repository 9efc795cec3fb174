"""`bench site`: the leaderboards as a static site in `results/site/`: plain HTML, one CSS and one small script.

No server, no CDN, no module scripts (Chromium blocks those on file://), so the folder opens from disk and works
on any static host. Pages: `index.html` (every protocol × dataset with its counts, the plots that belong to no
single table) and one `<protocol>__<dataset>.html` per table, with the same rows and cells as `bench table`'s
Markdown plus: sortable columns, filters by method / arch / preset, measured rows highlighted, Δ coloured by
sign and size, "not compared" reasons on hover, each record's run id linking to a copy of its JSON under
`runs/`, the table's plots (SVG) and the paper citation of each documented row.

Determinism: pages are built from sorted records with no time, path or host in them and the plots are the
deterministic SVGs of `bench.plots`, so regenerating from the same records gives byte-identical files. The new
site is written beside the old one and swapped in, so a reader never sees half a site.
"""
from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ._io import atomic_write_bytes, atomic_write_text
from .errors import BenchError
from .records import record_files
from typing import Any

from .reference import canonical_arch
from .reference.names import display_method, method_names
from .tables import (Measured, Table, _doc_rows, attach_spreads, build_tables, delta_parts, ordered_rows,
                     read_sweeps, table_rows)

__all__ = ["write_site"]

_logger = logging.getLogger(__name__)

FILTERS = ("method", "arch", "preset")
# inside every site bench writes: `--out` replaces a folder only when it is one (or an empty one), never the user's
SITE_MARKER = ".bench-site"
_ASSETS = ("style.css", "site.js")
MINIATURE_NOTE = ("Rows marked <span class=\"tag\">miniature</span> ran on the bundled miniature datasets: they show "
                  "what a leaderboard looks like and are never compared with the papers.")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: list[str]) -> str:
    head = ["<!doctype html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>", '<link rel="stylesheet" href="style.css">',
            '<script src="site.js" defer></script>', "</head>", "<body>"]
    return "\n".join(head + body + ["</body>", "</html>"]) + "\n"


def _delta_html(parts) -> tuple[str, str]:
    """(cell HTML, sort key) of a Δ cell: each delta a coloured span, each reason a short label with the whole
    reason on hover."""
    spans, first = [], ""
    for p in parts:
        if p.compared:
            for column, value in p.values:
                sign = "pos" if value > 0 else "neg" if value < 0 else "zero"
                size = "s3" if abs(value) >= 5 else "s2" if abs(value) >= 1 else "s1"
                spans.append(f'<span class="delta {sign} {size}" title="{_e(p.text)}">{_e(column)} '
                             f'{value:+.2f}</span>')
                first = first or f"{value:.6f}"
        else:
            label = "no documented row" if p.text.startswith("no documented row") else p.text.split(":")[0]
            spans.append(f'<span class="nc" title="{_e(p.text)}">{_e(label)}</span>')
    return " ".join(spans), first


def _table_page(t: Table, names: dict[int, str], plots: list[str], names_of_methods: dict[str, str]) -> str:
    header, rows = table_rows(t)
    n_fixed, metrics = 6, t.metric_columns()
    items = ordered_rows(t)     # the order of `rows`
    docs = [d for _, _, d in _doc_rows(t)]
    body = ['<nav><a href="index.html">← all leaderboards</a></nav>', f"<h1>{_e(t.protocol)} · {_e(t.dataset)}</h1>"]
    papers = list(dict.fromkeys((d.table, d.paper, d.preset) for d in docs))
    if papers:
        body.append("<p>Documented rows: " + "; ".join(
            f"<code>{_e(tb)}</code> ({_e(paper)}; preset <code>{_e(preset)}</code>)" for tb, paper, preset in papers)
            + ".</p>")
    else:
        body.append("<p>No documented rows for this pair.</p>")
    body.append("<p>Measured rows are highlighted. Δ = measured − documented, given only for a comparable record run "
                "with the documented preset; hover a grey label for the reason there is none. "
                + MINIATURE_NOTE + "</p>")
    shown = _fold_documented(list(zip(rows, items)), t, names_of_methods)
    values = {f: sorted({r[FIXED_INDEX[f]] for r, _, _ in shown if r[FIXED_INDEX[f]]}) for f in FILTERS}
    body.append('<form class="filters" id="filters">')
    for f in FILTERS:
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values[f])
        body.append(f'<label>{f} <select name="{f}" data-filter="{f}"><option value="">all</option>{options}'
                    f"</select></label>")
    body.append(f'<span class="count" id="count">{len(shown)} of {len(shown)} rows</span></form>')
    cols = header[:-2] + ["Δ", "record", "paper"]
    kinds = ["text"] * n_fixed + ["num"] * len(metrics) + ["num", "text", "text"]
    body.append('<div class="scroll"><table class="board" id="board">')
    body.append("<thead><tr>" + "".join(
        f'<th data-type="{k}" title="sort by {_e(c)}"><button type="button">{_e(c)}</button></th>'
        for c, k in zip(cols, kinds)) + "</tr></thead>")
    body.append("<tbody>")
    for row, item, extra in shown:
        attrs = "".join(f' data-{f}="{_e(row[FIXED_INDEX[f]])}"' for f in FILTERS)
        doc = None if isinstance(item, Measured) else item[1]
        printed = _e(extra["printed"])
        method = f'<td title="{printed}">{_e(row[1])}</td>' if extra["printed"] != row[1] else f"<td>{_e(row[1])}</td>"
        if doc is not None:
            sources = extra["sources"]
            cells = ['<td class="source">' + "<br>".join(
                f'<span title="{_e(_cite(d))}">{_e(d.table)}</span>' for d in sources) + "</td>", method]
            cells += [f"<td>{_e(c)}</td>" for c in row[2:n_fixed]]
            cells += [f'<td class="num">{_e(c)}</td>' for c in row[n_fixed:-2]]
            papers = list(dict.fromkeys(d.paper for d in sources))
            cells += ["<td></td>", "<td></td>", '<td class="paper">' + "<br>".join(
                f'<span title="{_e(p)}">{_e(p)}</span>' for p in papers) + "</td>"]
            mini = ""
        else:
            m = item
            cells = [f"<td>{_e(row[0])}</td>", method] + [f"<td>{_e(c)}</td>" for c in row[2:n_fixed]]
            cells[5] = f'<td><span class="tag">{_e(row[5])}</span></td>' if row[5] else "<td></td>"
            cells += [f'<td class="num">{_e(c)}</td>' for c in row[n_fixed:-2]]
            delta, key = _delta_html(delta_parts(m, t))
            cells.append(f'<td class="deltas" data-sort="{key}">{delta}</td>')
            links = [f'<a href="runs/{_e(names[id(r)])}" title="{_e(names[id(r)])}">{_e(fp)}</a>'
                     for fp, r in zip(m.run_ids, m.records)]
            cells += [f'<td class="record">{" ".join(links)}</td>', "<td></td>"]
            mini = " mini" if row[5] == "miniature" else ""
        cls = "documented" if doc is not None else "measured" + mini
        body.append(f'<tr class="{cls}"{attrs}>' + "".join(cells) + "</tr>")
    body.append("</tbody></table></div>")
    body += [f'<figure><img src="plots/{_e(p)}" alt="{_e(p)}"><figcaption>{_e(p)}</figcaption></figure>'
             for p in plots]
    return _page(f"{t.protocol} · {t.dataset} — bench leaderboard", body)


def _cite(d) -> str:
    return f"{d.paper} Outside the slide set, read in {d.citation}" if d.outside_slides else d.paper


def _fold_documented(pairs: list, t: Table, method_names: dict[str, str]) -> list[tuple[list[str], Any, dict]]:
    """(row, item, extra) to show: each row's method under its canonical name (`extra['printed']` the label as
    printed, for the tooltip), and documented rows that state the same number for the same method, arch, preset and
    setting folded into one row listing every paper that reports it (`extra['sources']`)."""
    n_fixed = 6
    out, seen = [], {}
    for row, item in pairs:
        row = list(row)
        printed = row[1]
        table = None if isinstance(item, Measured) else item[1].table
        row[1] = display_method(printed, table, method_names)
        if isinstance(item, Measured):
            out.append((row, item, {"printed": printed}))
            continue
        d = item[1]
        key = (row[1], canonical_arch(row[2]) or row[2], row[4], row[5], tuple(row[n_fixed:-2]))
        if key in seen:
            extra = seen[key]
            if d not in extra["sources"]:
                extra["sources"].append(d)
            if printed not in extra["printed"].split(" / "):
                extra["printed"] += f" / {printed}"
            continue
        seen[key] = extra = {"printed": printed, "sources": [d]}
        out.append((row, item, extra))
    return out


FIXED_INDEX = {"method": 1, "arch": 2, "preset": 4}


def _index_page(tables: list[Table], other_plots: list[str], n_records: int,
                analyses: list[tuple[str, str]] = ()) -> str:
    body = ["<h1>Leaderboards</h1>",
            f"<p>{len(tables)} leaderboards (protocol × dataset) from the papers' documented numbers and "
            f"{n_records} run records, regenerated by <code>bench site</code>. {MINIATURE_NOTE}</p>",
            '<table class="index" id="index"><thead><tr><th>protocol</th><th>dataset</th><th>documented</th>'
            "<th>measured</th></tr></thead><tbody>"]
    for t in tables:
        measured = f'<td class="num has-measured">{len(t.measured)}</td>' if t.measured else '<td class="num">0</td>'
        body.append(f'<tr><td>{_e(t.protocol)}</td><td><a href="{_e(t.stem)}.html">{_e(t.dataset)}</a></td>'
                    f'<td class="num">{len(_doc_rows(t))}</td>{measured}</tr>')
    body.append("</tbody></table>")
    if analyses:   # bench compare --write / bench sensitivity (bench.site_analyses)
        body.append("<p>Analyses: " + " · ".join(f'<a href="{_e(href)}">{_e(title)}</a>' for title, href in analyses)
                    + "</p>")
    body += [f'<figure><img src="plots/{_e(p)}" alt="{_e(p)}"><figcaption>{_e(p)}</figcaption></figure>'
             for p in other_plots]
    return _page("bench leaderboards", body)


def _draw_plots(folder: Path, tables: list[Table], records: list[dict]) -> list[str]:
    try:
        from .plots import write_plots
    except ModuleNotFoundError as e:    # matplotlib is the `plots` extra; the pages stand without it
        if e.name != "matplotlib":
            raise
        _logger.warning("site plots skipped: matplotlib is not installed (pip install 'bench[plots]')")
        return []
    keep = []
    for p in write_plots(folder, tables, records):
        if p.suffix == ".svg":
            keep.append(p.name)
        else:    # the pages embed the SVGs
            p.unlink()
    return sorted(keep)


def _plots_of(t: Table, plots: list[str]) -> list[str]:
    return [p for p in plots if p.removesuffix(".svg") == t.stem or p.startswith(f"{t.stem}__")]


def write_site(results: Path | str, out: Path | str | None = None) -> Path:
    """Write the site for RESULTS/runs/ into OUT (default RESULTS/site/), replacing what was there. Returns OUT."""
    results = Path(results)
    out = results / "site" if out is None else Path(out)
    _check_replaceable(out, results)
    files = record_files(results, skip_bad=True)
    records = [rec for _, rec in files]
    names = {id(rec): path.name for path, rec in files}
    tables = build_tables(records)
    attach_spreads(tables, read_sweeps(results))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        atomic_write_text(tmp / SITE_MARKER, "written by `bench site`: `bench site --out` replaces this folder whole\n")
        for path, _ in files:
            atomic_write_bytes(tmp / "runs" / path.name, path.read_bytes(), root=tmp)
        plots = _draw_plots(tmp / "plots", tables, records)
        used = set()
        canonical_names = method_names(d for t in tables for d in t.documented)
        for t in tables:
            mine = _plots_of(t, plots)
            used.update(mine)
            atomic_write_text(tmp / f"{t.stem}.html", _table_page(t, names, mine, canonical_names), root=tmp)
        from .site_analyses import write_analyses
        analyses = write_analyses(results, tmp, _page)
        atomic_write_text(tmp / "index.html", _index_page(tables, [p for p in plots if p not in used], len(files),
                                                          analyses))
        for asset in _ASSETS:
            atomic_write_bytes(tmp / asset, (Path(__file__).parent / "site_assets" / asset).read_bytes())
        _swap(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _is_old_site(folder: Path) -> bool:
    """A site written before SITE_MARKER existed: the pages, the assets, runs/*.json and plots/*.svg, nothing else."""
    if not all((folder / f).is_file() for f in ("index.html", *_ASSETS)):
        return False
    for p in folder.iterdir():
        if p.is_symlink():
            return False
        if p.is_dir():
            if p.name not in ("runs", "plots") or any(q.is_dir() or q.suffix not in (".json", ".svg")
                                                      for q in p.iterdir()):
                return False
        elif p.suffix != ".html" and p.name not in _ASSETS:
            return False
    return True


def _check_replaceable(out: Path, results: Path) -> None:
    """Refuse (one line, nothing touched) an OUT that is not a site bench wrote, an empty folder or a new path:
    the swap below removes what was there."""
    if not out.exists() and not out.is_symlink():
        return
    fix = "pass --out a new or empty folder (or a site folder bench wrote)"
    if out.is_symlink() or not out.is_dir():
        raise BenchError(f"{out}: exists and is not a folder; bench site replaces its --out whole, so it is refused; "
                         f"{fix}")
    if results.resolve() == out.resolve() or out.resolve() in results.resolve().parents:
        raise BenchError(f"{out}: holds the results folder {results}; bench site replaces its --out whole, so it is "
                         f"refused; {fix}")
    if (out / SITE_MARKER).is_file() or not any(out.iterdir()) or _is_old_site(out):
        return
    other = sorted(p.name for p in out.iterdir())
    raise BenchError(f"{out}: not a site folder bench wrote (no {SITE_MARKER}; holds {', '.join(other[:3])}"
                     f"{', …' if len(other) > 3 else ''}); refused, nothing replaced; {fix}")


def _swap(new: Path, out: Path) -> None:
    """Put the finished folder NEW in place of OUT: rename the old one aside first, so OUT is always whole."""
    os.chmod(new, 0o777 & ~_umask())   # mkdtemp makes 0700 folders
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old.", suffix=".tmp"))
        os.rmdir(old)
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
