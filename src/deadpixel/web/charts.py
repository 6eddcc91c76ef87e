"""Charts as inline SVG, drawn on the server by pygal: they need no JavaScript and nothing from a CDN.

pygal's own script (tooltips) would load from the network, so it is switched off (``js=[]``) and the small
config script it still inlines is removed, which keeps the dashboard's Content-Security-Policy free of
``unsafe-inline`` scripts.
"""

from __future__ import annotations

import functools
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import types


@functools.cache
def _pygal() -> types.ModuleType:
    """pygal, imported when the first chart is drawn: a server that only answers pixels (or a CLI command)
    does not hold its modules, several MiB per process, until someone opens a dashboard page."""
    import pygal

    return pygal


@functools.cache
def _style() -> Any:
    from pygal.style import Style

    return Style(
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


_drawn: OrderedDict[str, str] = OrderedDict()
_DRAWN_MAX = 256


def _memoised(draw: Callable[..., str]) -> Callable[..., str]:
    """Keep the last charts drawn, keyed by their exact data: pygal takes 3-20 ms a chart, and a page shows
    eight, while the data of a campaign that is not being opened right now does not change. Never stale,
    since the key is the data itself."""

    @functools.wraps(draw)
    def drawn(*args: Any) -> str:
        key = draw.__name__ + json.dumps(args, sort_keys=True, default=str)
        found = _drawn.get(key)
        if found is None:
            found = _drawn[key] = draw(*args)
            if len(_drawn) > _DRAWN_MAX:
                _drawn.popitem(last=False)
        else:
            _drawn.move_to_end(key)
        return found

    return drawn


def forget_drawn() -> None:
    """Drop every kept chart (for measuring how long drawing takes)."""
    _drawn.clear()


def _common() -> dict[str, Any]:
    return {"js": [], "style": _style(), "height": 260, "width": 760, "disable_xml_declaration": True}


def _clean(rendered: str) -> str:
    return _XML_DECLARATION.sub("", _SCRIPT.sub("", rendered))


def _svg(chart: Any) -> str:
    return _clean(chart.render(is_unicode=True))


def _by_verdict(chart: Any, rows: Sequence[dict[str, Any]]) -> str:
    """The chart's series, stacked in the same order on every time chart: opens by people (human, proxy), by
    machines (prefetch, scanner), then the rest (the sender's own, unclassified) when there is any."""
    chart.add("people", [row["human"] for row in rows])
    chart.add("machines", [row["machine"] for row in rows])
    other = [row["opens"] - row["human"] - row["machine"] for row in rows]
    if any(other):
        chart.add("yourself / unclassified", other)
    return _svg(chart)


@_memoised
def opens_over_time(days: Sequence[dict[str, Any]]) -> str:
    """Stacked bars per day: opens by people (human, proxy) and by machines (prefetch, scanner)."""
    import pygal

    chart = pygal.StackedBar(
        **_common(), legend_at_bottom=True, x_label_rotation=30, show_minor_x_labels=False, truncate_label=10
    )
    chart.x_labels = [d["day"] for d in days]
    chart.x_labels_major = [d["day"] for d in days][:: max(1, len(days) // 8)]
    return _by_verdict(chart, days)


@_memoised
def opens_by_hour(hours: Sequence[dict[str, Any]]) -> str:
    """Stacked areas per local hour of the first days: a line chart draws 72 hours far faster than bars."""
    import pygal

    chart = pygal.StackedLine(
        **_common(), fill=True, show_dots=False, legend_at_bottom=True, x_label_rotation=30,
        show_minor_x_labels=False, truncate_label=16,
    )  # fmt: skip
    labels = [h["hour"][:16].replace("T", " ") for h in hours]
    chart.x_labels = labels
    chart.x_labels_major = labels[::12]
    return _by_verdict(chart, hours)


@_memoised
def time_to_open(buckets: Sequence[dict[str, Any]]) -> str:
    """Bars of opened messages by how long after sending they were first opened."""
    import pygal

    chart = pygal.Bar(**_common(), show_legend=False, print_values=True, x_label_rotation=30)
    chart.x_labels = [b["label"] for b in buckets]
    chart.add("messages", [b["messages"] for b in buckets])
    return _svg(chart)


@_memoised
def sparkline(values: Sequence[int]) -> str:
    """A tiny line of opens per day, no axes: for a row of the campaigns list."""
    import pygal

    chart = pygal.Line(js=[], style=_style(), disable_xml_declaration=True, show_dots=False, fill=True)
    chart.add("opens", list(values))
    return _clean(chart.render_sparkline(width=120, height=24, is_unicode=True))


def heat_levels(cells: Sequence[Sequence[int]], levels: int = 8) -> list[list[tuple[int, int]]]:
    """Each cell's count with its shade, 0 (none) to ``levels``, relative to the busiest cell."""
    top = max((n for row in cells for n in row), default=0)
    return [[(n, 0 if n <= 0 else max(1, round(n / top * levels))) for n in row] for row in cells]


@_memoised
def breakdown_bars(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Horizontal bars of opens per value (client, country, verdict ...); unknown values say so."""
    size = {"width": 420, "height": 90 + 34 * max(1, len(rows))}
    import pygal

    chart = pygal.HorizontalBar(**_common() | size, show_legend=False, print_values=True, title_font_size=14)
    chart.title = title
    chart.x_labels = [str(row["value"]) if row["value"] is not None else "unknown" for row in rows]  # type: ignore[misc]
    chart.add("opens", [row["opens"] for row in rows])
    return _svg(chart)
