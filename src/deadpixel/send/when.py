"""When a scheduled campaign goes: ``--at TIME`` and ``--after DURATION`` (the API's ``at`` and ``after``).

TIME is ISO 8601 with an offset (``2026-12-07T09:00:00+01:00``, ``...Z``), or a local date and time without
one (``2026-12-07 09:00`` or ``2026-12-07T09:00``), read in DEADPIXEL_TIMEZONE. DURATION is one or more
numbers each with a unit: ``s``, ``m``, ``h``, ``d`` (``90m``, ``4h``, ``2d``, ``1h30m``). A time in the past
is refused (more than a minute back: a typo, most likely, and sending now would surprise); so is one more
than a year ahead.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from deadpixel.errors import DeadpixelError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,6})([smhd])")
MAX_AHEAD = 366 * 86400
PAST_SLACK = 60.0


class BadWhen(DeadpixelError):
    """A TIME or DURATION that cannot be read, or lies outside what a schedule takes."""


def parse_duration(text: str) -> float:
    """Seconds in ``90m``, ``4h``, ``2d``, ``1h30m`` (units s, m, h, d; no sign, no spaces)."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise BadWhen(f"duration {text!r}: write a number and a unit (s, m, h, d), like 90m, 4h, 2d or 1h30m")
    return float(sum(int(number) * UNITS[unit] for number, unit in parts))


def parse_time(text: str, zone: ZoneInfo) -> float:
    """UTC seconds of an ISO 8601 time; one without an offset is local time in ``zone``."""
    cleaned = text.strip()
    try:
        moment = dt.datetime.fromisoformat(cleaned.replace("z", "Z"))
    except ValueError:
        raise BadWhen(
            f"time {text!r}: write ISO 8601 like 2026-12-07T09:00:00+01:00,"
            " or local time like 2026-12-07 09:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def due_time(at: str | None, after: str | None, zone: ZoneInfo, now: float) -> float:
    """The moment a schedule names: exactly one of ``at`` and ``after``."""
    if (at is None) == (after is None):
        raise BadWhen("give either a time (at) or a duration (after), not both")
    due = parse_time(at, zone) if at is not None else now + parse_duration(after or "")
    if due < now - PAST_SLACK:
        raise BadWhen(f"time {at!r} has passed; give a time to come (or send now)")
    if due > now + MAX_AHEAD:
        raise BadWhen("a schedule reaches at most a year ahead")
    return max(due, now)
