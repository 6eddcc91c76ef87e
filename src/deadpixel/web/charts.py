"""Charts as inline SVG of our own drawing: no JavaScript, nothing from a CDN, no third-party code.

Every chart names itself (``<title>``, ``<desc>``), shows each bucket's numbers on hover (a ``<title>`` per
bar) and comes with the same numbers as an HTML table, which a keyboard and a screen reader reach. Time
charts are drawn twice, for a wide and a narrow screen (the stylesheet shows one), so their labels stay
legible on a phone; both scale to the width they are given (``viewBox``, width 100%). Opens by people and
by machines are told apart by colour and by a hatch, never by colour alone. Axis arithmetic lives in
``deadpixel.web.ticks``. Every text that comes from data (client names, countries) is escaped.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import escape
from typing import Any

from deadpixel.web.ticks import (
    MONTHS,
    WEEKDAYS,
    count_label,
    count_ticks,
    text_width,
    time_ticks,
    wrap,
)

FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif"
INK, MUTED, GRID, BASE = "#1d2129", "#4b5563", "#e5e7eb", "#9ca3af"
PEOPLE, MACHINES, OTHER, BAR = "#1a7f5a", "#6b7280", "#d9a441", "#1a7f5a"
PAD = 8.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One drawing of a time chart: its viewBox, font size and how many count steps its axis takes."""

    name: str
    width: float
    height: float
    font: float
    count_steps: int


WIDE = Frame("wide", 860, 280, 12, 5)
NARROW = Frame("narrow", 330, 240, 12, 4)


@dataclass(frozen=True, slots=True)
class Series:
    """A stacked part of a time chart's bars: which counts, how it is named and drawn."""

    key: str
    name: str
    fill: str
    hatched: bool = False


SERIES = (
    Series("people", "people (human, proxy)", PEOPLE),
    Series("machines", "machines (prefetch, scanner)", MACHINES, hatched=True),
    Series("other", "yourself / unclassified", OTHER),
)

_drawn: OrderedDict[str, str] = OrderedDict()
_DRAWN_MAX = 256


def _memoised(draw: Callable[..., str]) -> Callable[..., str]:
    """Keep the last charts drawn, keyed by their exact data: the data of a campaign that is not being
    opened right now does not change, so a page view need not draw again. Never stale, since the key is
    the data itself."""

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


# --- time charts: stacked bars of opens per hour or per day --------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One hour or day of opens, split as unique opens split messages."""

    start: datetime
    people: int
    machines: int
    other: int

    @property
    def total(self) -> int:
        return self.people + self.machines + self.other

    def part(self, key: str) -> int:
        return int(getattr(self, key))


def buckets(rows: Sequence[dict[str, Any]], unit: str) -> list[Bucket]:
    """The analytics rows (``hour``/``day``, opens, human, machine) as buckets; counts below 0 as 0."""
    found = []
    for row in rows:
        start = datetime.fromisoformat(str(row[unit]))
        human, machine = max(0, int(row["human"])), max(0, int(row["machine"]))
        other = max(0, int(row["opens"]) - human - machine)
        found.append(Bucket(start, human, machine, other))
    return found


@_memoised
def opens_by_hour(hours: Sequence[dict[str, Any]]) -> str:
    """Stacked bars per local hour: opens by people, by machines and the rest."""
    return time_chart("opens-by-hour", "Opens by hour", buckets(hours, "hour"), "hour")


@_memoised
def opens_over_time(days: Sequence[dict[str, Any]]) -> str:
    """Stacked bars per local day: opens by people, by machines and the rest."""
    return time_chart("opens-over-time", "Opens by day", buckets(days, "day"), "day")


def time_chart(key: str, title: str, data: Sequence[Bucket], unit: str) -> str:
    """The legend, a wide and a narrow drawing, and the numbers as a table."""
    if not any(b.total for b in data):
        return '<p class="empty">No opens in this time.</p>'
    shown = [s for s in SERIES if s.key != "other" or any(b.other for b in data)]
    total = sum(b.total for b in data)
    desc = (
        f"{total:,} opens from {_when(data[0].start, unit)} to {_when(data[-1].start, unit)}: "
        + ", ".join(f"{sum(b.part(s.key) for b in data):,} by {s.name}" for s in shown)
        + ". The table below lists each "
        + unit
        + "."
    )
    drawings = "".join(_time_svg(key, title, desc, data, unit, shown, frame) for frame in (WIDE, NARROW))
    return _legend(shown) + drawings + _time_table(title, data, unit, shown)


def _time_svg(
    key: str, title: str, desc: str, data: Sequence[Bucket], unit: str, shown: Sequence[Series], frame: Frame
) -> str:
    font = frame.font
    y_ticks = count_ticks(max(b.total for b in data), frame.count_steps)
    y_labels = [count_label(v) for v in y_ticks]
    left = PAD + max(text_width(label, font) for label in y_labels) + 6
    plot_w = frame.width - left - PAD
    bucket_px = plot_w / len(data)
    x_ticks = time_ticks([b.start for b in data], unit, bucket_px, font)
    lines = max((len(t.lines) for t in x_ticks), default=1)
    top, bottom = PAD + font / 2, frame.height - PAD - lines * font * 1.25 - 4
    plot_h = bottom - top
    scale = plot_h / y_ticks[-1]
    ident = f"chart-{key}-{frame.name}"
    out = [_svg_open(ident, frame.name, frame.width, frame.height, font, title, desc, shown)]
    for value, label in zip(y_ticks, y_labels, strict=True):
        y = bottom - value * scale
        colour = BASE if value == 0 else GRID
        out.append(
            f'<line x1="{left:.1f}" x2="{frame.width - PAD:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}"/>'
        )
        out.append(f'<text x="{left - 6:.1f}" y="{y + font * 0.35:.1f}" text-anchor="end">{label}</text>')
    gap = min(bucket_px * 0.2, 4.0) if bucket_px >= 4 else 0.0
    for i, b in enumerate(data):
        x = left + i * bucket_px
        out.append(f"<g><title>{escape(_bucket_title(b, unit, shown))}</title>")
        out.append(
            f'<rect x="{x:.2f}" y="{top:.1f}" width="{bucket_px:.2f}" height="{plot_h:.1f}" '
            'fill="transparent"/>'
        )
        y = bottom
        for s in shown:
            n = b.part(s.key)
            if n:
                h = max(n * scale, 1.0)  # a single open stays visible beside thousands
                y -= h
                fill = f"url(#{ident}-{s.key})" if s.hatched else s.fill
                out.append(
                    f'<rect class="{s.key}" x="{x + gap / 2:.2f}" y="{y:.2f}" width="{bucket_px - gap:.2f}" '
                    f'height="{h:.2f}" fill="{fill}"/>'
                )
        out.append("</g>")
    label_y = bottom + font + 4
    for tick in x_ticks:
        half = tick.width(font) / 2
        x = min(max(left + (tick.index + 0.5) * bucket_px, half + 1), frame.width - half - 1)
        spans = "".join(
            f'<tspan x="{x:.1f}" dy="{0 if n == 0 else font * 1.25:.1f}">{escape(line)}</tspan>'
            for n, line in enumerate(tick.lines)
        )
        out.append(f'<text class="x" x="{x:.1f}" y="{label_y:.1f}" text-anchor="middle">{spans}</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_open(
    ident: str, css: str, width: float, height: float, font: float, title: str, desc: str,
    hatched: Sequence[Series] = (),
) -> str:  # fmt: skip
    patterns = "".join(
        f'<pattern id="{ident}-{s.key}" width="6" height="6" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{s.fill}"/>'
        f'<rect width="2" height="6" fill="#fff" fill-opacity="0.45"/></pattern>'
        for s in hatched
        if s.hatched
    )
    return (
        f'<svg class="{css}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'role="img" aria-labelledby="{ident}-t {ident}-d" font-family="{FONT}" font-size="{font:g}" '
        f'fill="{MUTED}"><title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{escape(desc)}'
        f"</desc>{f'<defs>{patterns}</defs>' if patterns else ''}"
    )


def _legend(shown: Sequence[Series]) -> str:
    items = "".join(
        f'<li><span class="swatch {s.key}" aria-hidden="true"></span>{escape(s.name)}</li>' for s in shown
    )
    return f'<ul class="legend">{items}</ul>'


def _when(start: datetime | date, unit: str) -> str:
    """A bucket as a person says it: Tue 8 Dec 2026, 14:00 (an hour) or Tue 8 Dec 2026 (a day)."""
    day = f"{WEEKDAYS[start.weekday()]} {start.day} {MONTHS[start.month - 1]} {start.year}"
    return f"{day}, {start.hour:02d}:00" if unit == "hour" and isinstance(start, datetime) else day


def _bucket_title(b: Bucket, unit: str, shown: Sequence[Series]) -> str:
    parts = ", ".join(f"{b.part(s.key):,} by {s.name.split(' (')[0]}" for s in shown)
    return f"{_when(b.start, unit)}: {b.total:,} open{'' if b.total == 1 else 's'} ({parts})"


def _time_table(title: str, data: Sequence[Bucket], unit: str, shown: Sequence[Series]) -> str:
    """Each bucket with opens as a row: what a screen reader or a keyboard reads instead of the bars."""
    head = "".join(f'<th scope="col" class="n">{escape(s.name)}</th>' for s in shown)
    rows = "".join(
        f'<tr><th scope="row">{_when(b.start, unit)}</th>'
        + "".join(f'<td class="n">{b.part(s.key):,}</td>' for s in shown)
        + f'<td class="n">{b.total:,}</td></tr>'
        for b in data
        if b.total
    )
    return (
        f'<details class="chart-data"><summary>The numbers ({unit}s with opens)</summary>'
        f'{_scroll_box(title)}<table class="list"><thead><tr><th scope="col">{unit.title()}</th>{head}'
        f'<th scope="col" class="n">all</th></tr></thead><tbody>{rows}</tbody></table></div></details>'
    )


def _printable(text: str) -> str:
    """A label from data without control characters, which neither SVG nor a screen reader can show."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _scroll_box(title: str) -> str:
    """A box a wide table scrolls in on a narrow screen, reachable by keyboard, named for a screen reader."""
    return f'<div class="table-scroll" tabindex="0" role="region" aria-label="{escape(title)}: the numbers">'


# --- bar charts: one bar per label ------------------------------------------------------------------------

BARS_WIDTH, BARS_FONT, BAR_HEIGHT = 360.0, 13.0, 14.0


def bar_chart(key: str, title: str, rows: Sequence[tuple[str, int]], noun: str) -> str:
    """Horizontal bars, each under its whole label (wrapped, never cut) with its count at its end."""
    if not rows:
        return '<p class="empty">Nothing to show yet.</p>'
    rows = [(_printable(label), n) for label, n in rows]
    counts = [max(0, n) for _, n in rows]
    total, top = sum(counts), max(max(counts), 1)
    font, width = BARS_FONT, BARS_WIDTH
    value_room = max(text_width(f"{n:,}", font) for n in counts) + 6
    longest = width - 2 * PAD - value_room
    ident = f"chart-{key}"
    body, y = [], PAD
    for (label, _), n in zip(rows, counts, strict=True):
        lines = wrap(label, font, width - 2 * PAD)
        share = f" ({n / total:.0%})" if total else ""
        body.append(f'<g class="row"><title>{escape(label)}: {n:,} {noun}{share}</title>')
        for line in lines:
            y += font * 1.2
            body.append(f'<text x="{PAD:g}" y="{y:.1f}" fill="{INK}">{escape(line)}</text>')
        y += 4
        length = n / top * longest
        if n:
            length = max(length, 2.0)
            body.append(
                f'<rect class="bar" x="{PAD:g}" y="{y:.1f}" width="{length:.1f}" height="{BAR_HEIGHT:g}" '
                f'rx="2" fill="{BAR}"/>'
            )
        body.append(f'<text x="{PAD + length + 6:.1f}" y="{y + BAR_HEIGHT - 3:.1f}">{n:,}</text></g>')
        y += BAR_HEIGHT + 10
    desc = "; ".join(f"{label}: {n:,}" for (label, _), n in zip(rows, counts, strict=True))
    head = _svg_open(ident, "bars", width, y + PAD, font, title, f"{noun.capitalize()} — {desc}.")
    return head + "".join(body) + "</svg>" + _bars_table(title, rows, counts)


def _bars_table(title: str, rows: Sequence[tuple[str, int]], counts: Sequence[int]) -> str:
    body = "".join(
        f'<tr><th scope="row">{escape(label)}</th><td class="n">{n:,}</td></tr>'
        for (label, _), n in zip(rows, counts, strict=True)
    )
    return (
        f'<details class="chart-data"><summary>The numbers</summary>{_scroll_box(title)}'
        f'<table class="list"><tbody>{body}</tbody></table></div></details>'
    )


@_memoised
def time_to_open(buckets: Sequence[dict[str, Any]]) -> str:
    """Opened messages by how long after sending a person first opened them."""
    rows = [(str(b["label"]), int(b["messages"])) for b in buckets]
    return bar_chart("time-to-open", "Time to first open", rows, "messages")


@_memoised
def breakdown_bars(title: str, rows: Sequence[dict[str, Any]]) -> str:
    """Opens per value (client, country, verdict ...); unknown values say so."""
    named = [
        (str(row["value"]) if row["value"] is not None else "unknown", int(row["opens"])) for row in rows
    ]
    key = "".join(c if c.isalnum() else "-" for c in title.lower())
    return bar_chart(f"breakdown-{key}", f"Opens by {title.lower()}", named, "opens")


@_memoised
def sparkline(values: Sequence[int]) -> str:
    """A tiny line of opens per day, no axes: for a row of the campaigns list; its title says the numbers."""
    counts = [max(0, int(v)) for v in values]
    if not counts:
        return ""
    width, height, top = 120.0, 24.0, max(max(counts), 1)
    step = width / max(len(counts) - 1, 1)
    points = [(i * step, height - 1 - n / top * (height - 2)) for i, n in enumerate(counts)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    area = f"0,{height:g} {line} {points[-1][0]:.1f},{height:g}"
    title = (
        f"Opens per day over the last {len(counts)} days: {sum(counts):,} in all, "
        f"at most {max(counts):,} a day, {counts[-1]:,} today"
    )
    return (
        f'<svg class="sparkline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" '
        f'role="img"><title>{title}</title><polygon points="{area}" fill="{PEOPLE}" fill-opacity="0.15"/>'
        f'<polyline points="{line}" fill="none" stroke="{PEOPLE}" stroke-width="1.5"/></svg>'
    )


def heat_levels(cells: Sequence[Sequence[int]], levels: int = 8) -> list[list[tuple[int, int]]]:
    """Each cell's count with its shade, 0 (none) to ``levels``, relative to the busiest cell."""
    top = max((n for row in cells for n in row), default=0)
    return [[(n, 0 if n <= 0 else max(1, round(n / top * levels))) for n in row] for row in cells]
