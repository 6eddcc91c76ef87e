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


class FailureLimiter:
    """Failed token checks per client address: a bucket of ``burst`` failures that refills ``burst`` a
    minute. An address with an empty bucket is answered 429 before its token is looked up, so a stream of
    made-up tokens costs the database a handful of lookups, not one each. Per process, like RateLimiter."""

    MAX_ADDRESSES = 10_000  # beyond this, full buckets (addresses that stopped failing) are forgotten

    def __init__(self, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(burst)
        self.refill = burst / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (failures left, at)

    def _left(self, key: str, now: float) -> float:
        left, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, left + (now - at) * self.refill)

    def wait(self, key: str) -> int:
        """0 when ``key`` may try a token, else the whole seconds until it may (for Retry-After)."""
        left = self._left(key, self.clock())
        return 0 if left >= 1.0 else max(1, math.ceil((1.0 - left) / self.refill))

    def failed(self, key: str) -> None:
        now = self.clock()
        self._buckets[key] = (max(0.0, self._left(key, now) - 1.0), now)
        if len(self._buckets) > self.MAX_ADDRESSES:
            self._buckets = {k: v for k, v in self._buckets.items() if self._left(k, now) < self.capacity}
