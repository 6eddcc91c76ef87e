"""Per-token rate limit: a token bucket per token, in this process.

A bucket holds up to a minute's allowance and refills continuously, so a client may burst (a dashboard
loading several lists at once) but not sustain more than DEADPIXEL_API_RATE requests a minute. Per process,
like the open cap: with N workers the ceiling is N times the setting, and no coordination is needed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # token id -> (tokens, at)

    def take(self, key: int) -> int:
        """0 when the request may go ahead, else the whole seconds to wait (for Retry-After)."""
        if not self.capacity:
            return 0
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.refill)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.refill))
