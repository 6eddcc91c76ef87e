"""Where a chart's axes put their labels, and what the labels say: pure arithmetic, no drawing.

Counts of opens are whole numbers, so the count axis steps by 1, 2 or 5 x 10^k and never shows "0.5".
Time axes label only as many buckets as their labels have room for (hours on the hour, days, Mondays,
first days of months), so a label is never cut short or drawn over its neighbour: the widths are
estimated on the generous side, from the number of characters.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

CHAR_WIDTH = 0.62  # of the font size: wider than the digits and most letters of a system sans-serif
GAP = 10  # px between two neighbouring labels at least
HOUR_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 168)
DAY_STEPS = (1, 2, 7, 14)  # then months: 1, 3, 6 and 12
MONTH_STEPS = (1, 3, 6, 12)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def text_width(text: str, size: float) -> float:
    """A generous estimate of a one-line label's width in px."""
    return len(text) * size * CHAR_WIDTH


def count_ticks(top: int, most: int = 5) -> list[int]:
    """0 up to at least ``top`` in whole steps of 1, 2 or 5 x 10^k, at most ``most`` steps."""
    top = max(int(top), 1)
    most = max(most, 1)
    power = 1
    while True:
        for multiple in (1, 2, 5):
            step = multiple * power
            steps = -(-top // step)
            if steps <= most:
                return [i * step for i in range(steps + 1)]
        power *= 10


def count_label(n: int) -> str:
    """A count as an axis says it: 7, 1,250, 12k, 3.5M (exact below 10,000)."""
    if abs(n) < 10_000:
        return f"{n:,}"
    for size, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
            return text.removesuffix(".0") + unit
    return f"{n:,}"  # pragma: no cover - every n >= 10,000 has a unit


@dataclass(frozen=True, slots=True)
class Tick:
    """A labelled bucket: its index, and one or two lines (the second names the day, month or year)."""

    index: int
    lines: tuple[str, ...]

    def width(self, size: float) -> float:
        return max(text_width(line, size) for line in self.lines)


def time_ticks(starts: Sequence[datetime], unit: str, bucket_px: float, size: float) -> list[Tick]:
    """The buckets to label along a time axis of ``unit`` ("hour" or "day") buckets ``bucket_px`` wide.

    The smallest step whose labels fit side by side; at least the first bucket is labelled.
    """
    if not starts:
        return []
    steps = _hour_steps(starts) if unit == "hour" else _day_steps(starts)
    chosen: list[Tick] = []
    for chosen in steps:
        if _fits(chosen, bucket_px, size):
            return chosen
    return chosen[:1]  # not even the widest step fits (a very narrow chart): label the first bucket only


def _fits(ticks: Sequence[Tick], bucket_px: float, size: float) -> bool:
    return all(
        (b.index - a.index) * bucket_px >= (a.width(size) + b.width(size)) / 2 + GAP
        for a, b in itertools.pairwise(ticks)
    )


def _hour_steps(starts: Sequence[datetime]) -> list[list[Tick]]:
    """For each of HOUR_STEPS, the labelled hours: the time, and under the first and each new day, the day."""
    found = []
    for step in HOUR_STEPS:
        if step <= 24:
            picked = [i for i, t in enumerate(starts) if t.hour % step == 0]
        else:
            midnights = [i for i, t in enumerate(starts) if t.hour == 0]
            picked = midnights[:: step // 24]
        found.append(_label_hours(starts, picked or [0], with_time=step < 24))
    return found


def _label_hours(starts: Sequence[datetime], picked: list[int], with_time: bool) -> list[Tick]:
    ticks, last_day = [], None
    for i in picked:
        t = starts[i]
        day = f"{WEEKDAYS[t.weekday()]} {t.day} {MONTHS[t.month - 1]}"
        if not with_time:
            ticks.append(Tick(i, (day,)))
        elif t.date() != last_day:
            ticks.append(Tick(i, (f"{t.hour:02d}:00", day)))
        else:
            ticks.append(Tick(i, (f"{t.hour:02d}:00",)))
        last_day = t.date()
    return ticks


def _day_steps(starts: Sequence[datetime]) -> list[list[Tick]]:
    """Every day, every other day, Mondays, every other Monday, then first days of months."""
    found = []
    for step in DAY_STEPS:
        if step < 7:
            picked = list(range(0, len(starts), step))
        else:
            mondays = [i for i, t in enumerate(starts) if t.weekday() == 0]
            picked = mondays[:: step // 7]
        found.append(_label_days(starts, picked or [0]))
    for months in MONTH_STEPS:
        firsts = [i for i, t in enumerate(starts) if t.day == 1 and (t.month - 1) % months == 0]
        found.append(_label_months(starts, firsts or [0]))
    return found


def _label_days(starts: Sequence[datetime], picked: list[int]) -> list[Tick]:
    ticks, last_year = [], None
    for i in picked:
        t = starts[i]
        day = f"{MONTHS[t.month - 1]} {t.day}"
        ticks.append(Tick(i, (day, str(t.year)) if t.year != last_year else (day,)))
        last_year = t.year
    return ticks


def _label_months(starts: Sequence[datetime], picked: list[int]) -> list[Tick]:
    ticks, last_year = [], None
    for i in picked:
        t = starts[i]
        month = MONTHS[t.month - 1] if t.day == 1 else f"{MONTHS[t.month - 1]} {t.day}"
        ticks.append(Tick(i, (month, str(t.year)) if t.year != last_year else (month,)))
        last_year = t.year
    return ticks


def wrap(text: str, size: float, width: float) -> list[str]:
    """A label in lines no wider than ``width`` px: broken between words, a word too long for a line
    broken inside it, so nothing is ever cut off."""
    room = max(1, int(width // (size * CHAR_WIDTH)))
    lines: list[str] = []
    line = ""
    for word in text.split() or [""]:
        while len(word) > room:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:room])
            word = word[room:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= room:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    lines.append(line)
    return lines
