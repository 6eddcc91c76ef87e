"""The time range a campaign page charts (``?range=24h|7d|30d|all``), checked before any SQL.

Chosen on the server by plain links, so it works without JavaScript and a range can be bookmarked. The
range narrows opens over time and the heatmap; the headline numbers, breakdowns and time to first open
count the whole campaign, as the report does.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Range:
    """One choice: its query value, what the page calls it and how far back it reaches (None: all)."""

    key: str
    label: str
    seconds: float | None

    def window(self, now: float) -> tuple[float, float] | None:
        """(since, until) for analytics.chart_data; None for the whole campaign."""
        return None if self.seconds is None else (now - self.seconds, now)


RANGES = (
    Range("24h", "24 hours", 24 * HOUR),
    Range("7d", "7 days", 7 * 24 * HOUR),
    Range("30d", "30 days", 30 * 24 * HOUR),
    Range("all", "All", None),
)
DEFAULT = RANGES[-1]
_BY_KEY = {r.key: r for r in RANGES}


def parse(value: str | None) -> Range | None:
    """The range a query value names (the default when absent); None when it names none."""
    return DEFAULT if value in (None, "") else _BY_KEY.get(str(value))
