"""Small helpers for ``__repr__`` and Jupyter's ``_repr_html_`` (no pandas needed)."""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence


def short(value: Any, width: int = 60) -> str:
    """A one-line, length-capped repr."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def fmt_distance(d: float) -> str:
    return "inf" if d == float("inf") else f"{d:.6g}"


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "", more: int = 0) -> str:
    """A plain HTML table; ``more`` > 0 adds a final "... N more rows" line."""
    out = ['<table class="shoal">']
    if caption:
        out.append(f"<caption style='text-align:left'>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    if more > 0:
        out.append(f"<tr><td colspan='{len(columns)}'>... {more} more rows</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)
