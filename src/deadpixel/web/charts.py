"""Charts as inline SVG, drawn on the server by pygal: they need no JavaScript and nothing from a CDN.

pygal's own script (tooltips) would load from the network, so it is switched off (``js=[]``) and the small
config script it still inlines is removed, which keeps the dashboard's Content-Security-Policy free of
``unsafe-inline`` scripts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pygal
from pygal.style import Style

_STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#333",
    foreground_strong="#111",
    foreground_subtle="#999",
    colors=("#1a7f5a", "#c2671b", "#5b6ee1", "#8d8d8d"),
    font_family="system-ui, -apple-system, 'Segoe UI', sans-serif",
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_XML_DECLARATION = re.compile(r"^<\?xml[^>]*>\s*")


def _common() -> dict[str, Any]:
    return {"js": [], "style": _STYLE, "height": 260, "width": 760, "disable_xml_declaration": True}


def _svg(chart: Any) -> str:
    rendered: str = chart.render(is_unicode=True)
    return _XML_DECLARATION.sub("", _SCRIPT.sub("", rendered))


def opens_over_time(days: Sequence[dict[str, Any]]) -> str:
    """Stacked bars per day: opens by people (human, proxy) and by machines (prefetch, scanner)."""
    chart = pygal.StackedBar(
        **_common(), legend_at_bottom=True, x_label_rotation=30, show_minor_x_labels=False, truncate_label=10
    )
    chart.x_labels = [d["day"] for d in days]
    chart.x_labels_major = [d["day"] for d in days][:: max(1, len(days) // 8)]
    chart.add("people", [d["human"] for d in days])
    chart.add("machines", [d["machine"] for d in days])
    other = [d["opens"] - d["human"] - d["machine"] for d in days]
    if any(other):
        chart.add("yourself / unclassified", other)
    return _svg(chart)


def breakdown_bars(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Horizontal bars of opens per value (client, country, verdict ...); unknown values say so."""
    size = {"width": 420, "height": 90 + 34 * max(1, len(rows))}
    chart = pygal.HorizontalBar(**_common() | size, show_legend=False, print_values=True, title_font_size=14)
    chart.title = title
    chart.x_labels = [str(row["value"]) if row["value"] is not None else "unknown" for row in rows]  # type: ignore[misc]
    chart.add("opens", [row["opens"] for row in rows])
    return _svg(chart)
