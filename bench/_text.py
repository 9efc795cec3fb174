"""Text from records (other people's files) on its way into a file name, a Markdown table or a matplotlib figure.

Each destination has one function here, and every caller goes through it:
- `safe_name`: a single path component (no separator, never `.`/`..`, no leading dot, bounded length);
- `md_escape`: a Markdown table cell or heading that stays one cell on one line;
- `mpl_text`: a label that matplotlib draws literally (no mathtext, no lone surrogates, no control characters).
"""
from __future__ import annotations

import re

__all__ = ["safe_name", "md_escape", "mpl_text", "NAME_CHARS"]

NAME_CHARS = r"A-Za-z0-9_.+-"
_UNSAFE = re.compile(f"[^{NAME_CHARS}]+")
# every character Python's str.splitlines() breaks on, plus the rest of C0/C1: none of them may end a table row
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def safe_name(text: object, limit: int = 120) -> str:
    """`text` as one file-name component: runs of characters outside [A-Za-z0-9_.+-] become '-', leading and
    trailing dots and dashes go (so never '.', '..' or a hidden file), then at most `limit` characters; never
    empty."""
    return _UNSAFE.sub("-", str(text)).strip("-.")[:limit] or "x"


def md_escape(text: object) -> str:
    """A Markdown-safe table cell or heading: backslashes and pipes escaped (GFM splits a row on every pipe not
    preceded by an escaping backslash), line breaks and control characters flattened to spaces, `<`/`>` as
    entities so no raw HTML reaches a renderer."""
    text = _SURROGATES.sub("\ufffd", str(text))
    text = _LINE_BREAKS.sub(" ", text.replace("\\", "\\\\").replace("|", "\\|"))
    return text.replace("<", "&lt;").replace(">", "&gt;")


def mpl_text(text: object, limit: int = 120) -> str:
    """A label matplotlib draws as written: `$` escaped (no mathtext parsing), lone surrogates and control
    characters replaced, at most `limit` characters (an ellipsis marks a cut)."""
    text = _LINE_BREAKS.sub(" ", _SURROGATES.sub("\ufffd", str(text)))
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")
