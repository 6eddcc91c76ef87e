"""A rate limit shared by the sending workers: messages are spaced evenly, never sent in bursts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float | None:
    """``10/s``, ``600/m``, ``3000/h`` or a bare number per second; ``0``/``off`` means no limit."""
    value = text.strip().lower().replace(" ", "")
    if value in ("0", "off", "none", "unlimited"):
        return None
    count, _, unit = value.partition("/")
    unit = unit.removeprefix("1")
    unit = {"sec": "s", "second": "s", "min": "m", "minute": "m", "hour": "h"}.get(unit, unit)
    try:
        number = float(count)
    except ValueError:
        raise ValueError(f"{text!r} is not a rate like 10/s, 600/m or 3000/h") from None
    if unit and unit not in UNITS:
        raise ValueError(f"{text!r}: the unit must be /s, /m or /h")
    if not number > 0 or number != number:
        raise ValueError(f"{text!r}: the rate must be positive (0 or off for no limit)")
    return number / UNITS[unit or "s"]


class RateLimiter:
    """At most ``per_second`` acquisitions per second across threads."""

    def __init__(
        self,
        per_second: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            self._sleep(start - now)
