"""The raw facts of one pixel fetch, as the hot path saw them: what every other part starts from."""

from __future__ import annotations

from typing import NamedTuple


class OpenEvent(NamedTuple):
    message_id: str
    at: float  # seconds since the epoch, UTC
    ip: str | None  # the full client address; what is stored follows DEADPIXEL_IP_MODE
    user_agent: str | None
    method: str
    purpose: str | None = None  # a speculative-load hint (Purpose / Sec-Purpose / X-Moz header)
