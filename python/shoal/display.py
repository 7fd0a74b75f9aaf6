"""Small helpers for ``__repr__`` and Jupyter's ``_repr_html_`` (no pandas needed)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def short(value: Any, width: int = 60) -> str:
    """A one-line, length-capped repr."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def fmt_distance(d: float) -> str:
    return "inf" if d == float("inf") else f"{d:.6g}"


#: Cell colours of the nodes x shards grid, by replica state (role for active replicas).
GRID_COLOURS = {
    "leader": "#2e7d32",
    "follower": "#a5d6a7",
    "learner": "#fff59d",
    "joining": "#fff59d",
    "leaving": "#ffcc80",
    "down": "#ef9a9a",
    "quarantined": "#ce93d8",
}


def grid_cell(role: str, state: str) -> str:
    """The label of one replica in the grid: its role when active, else its state."""
    return role if state == "active" else state


def html_grid(nodes: Sequence[int], rows: Iterable[tuple[str, dict[int, str]]], caption: str = "") -> str:
    """A nodes x shards grid: one row per (label, {node: cell label}), cells coloured by ``GRID_COLOURS``,
    blank where the node holds no replica."""
    out = ['<table class="shoal">']
    if caption:
        out.append(f"<caption style='text-align:left'>{html.escape(caption)}</caption>")
    out.append("<thead><tr><th></th>" + "".join(f"<th>node {n}</th>" for n in nodes) + "</tr></thead><tbody>")
    for label, cells in rows:
        tds = []
        for n in nodes:
            c = cells.get(n, "")
            colour = GRID_COLOURS.get(c, "")
            fg = "white" if c == "leader" else "black"
            style = f" style='background:{colour};color:{fg};text-align:center'" if colour else ""
            tds.append(f"<td{style}>{html.escape(c)}</td>")
        out.append(f"<tr><th style='text-align:left'>{html.escape(label)}</th>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    legend = " ".join(
        f"<span style='background:{c};color:{'white' if k == 'leader' else 'black'};padding:0 4px'>{k}</span>"
        for k, c in GRID_COLOURS.items()
    )
    return "".join(out) + f"<div style='font-size:smaller'>{legend}</div>"


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
