"""The analyses pages of the site: `bench compare --write` and `bench sensitivity` outputs (RESULTS/compare/,
RESULTS/sensitivity/) turned from their Markdown into HTML pages beside the leaderboards, with their plots.

The Markdown these commands write is a small, fixed subset (headings, paragraphs, pipe tables, links, bold,
code), so it is rendered here rather than with a Markdown library bench does not otherwise need.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from ._io import atomic_write_bytes, atomic_write_text

__all__ = ["ANALYSES", "write_analyses", "markdown_to_html"]

ANALYSES = (("compare", "Paired comparisons"), ("sensitivity", "Protocol sensitivity"))


def _inline(text: str) -> str:
    out = html.escape(text, quote=True)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    # links to the sibling .md pages become the .html pages written beside them
    return re.sub(r"\[([^\]]+)\]\(([A-Za-z0-9_.+-]+)\.md\)", r'<a href="\2.html">\1</a>', out)


def markdown_to_html(md: str) -> list[str]:
    body, table = [], []

    def flush():
        if table:
            head, *rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table
                           if not re.fullmatch(r"\|?(\s*-+\s*\|)+\s*-*\s*\|?", r.strip())]
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>")
            body.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append("</tbody></table>")
            table.clear()
    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush()
    return body


def write_analyses(results: Path, site: Path, page) -> list[tuple[str, str]]:
    """Write one HTML page per Markdown file of RESULTS/compare and RESULTS/sensitivity (and copy their plots)
    into SITE/<kind>/; returns (title, href) of each kind's index page that exists."""
    links = []
    for kind, title in ANALYSES:
        folder = Path(results) / kind
        if not (folder / "index.md").is_file():
            continue
        for md in sorted(folder.glob("*.md")):
            plots = [p.name for p in (md.with_suffix(".svg"),) if p.is_file()]
            for name in plots:
                atomic_write_bytes(site / kind / name, (folder / name).read_bytes(), root=site)
            body = ['<p><a href="../index.html">← leaderboards</a></p>'] + markdown_to_html(md.read_text())
            body += [f'<figure><img src="{html.escape(p)}" alt="{html.escape(p)}"></figure>' for p in plots]
            atomic_write_text(site / kind / f"{md.stem}.html", page(f"bench {kind}: {md.stem}", body)
                              .replace('href="style.css"', 'href="../style.css"')
                              .replace('src="site.js"', 'src="../site.js"'), root=site)
        links.append((title, f"{kind}/index.html"))
    return links
