"""The raw facts of one pixel fetch or link click as the hot path saw them: what every other part uses."""

from __future__ import annotations

from typing import NamedTuple

KINDS = ("human", "proxy", "prefetch", "scanner", "self")  # every verdict's kind
HUMAN_KINDS = frozenset({"human", "proxy"})  # a person read it (through a proxy or not)
MACHINE_KINDS = frozenset({"prefetch", "scanner"})
HIDDEN_LINK = 2**31 - 1
"""The link number of each tracked message's hidden link (``mail.compose``): no person can see or click it, so
whatever follows it is a machine. The highest number the links and clicks tables hold, never minted for a real
link."""


class OpenEvent(NamedTuple):
    message_id: str
    at: float  # seconds since the epoch, UTC
    ip: str | None  # the full client address; what is stored follows DEADPIXEL_IP_MODE
    user_agent: str | None
    method: str
    purpose: str | None = None  # a speculative-load hint (Purpose / Sec-Purpose / X-Moz header)


class ClickEvent(NamedTuple):
    """One request for a tracked link: the same facts as an open, plus which link of the message."""

    message_id: str
    link: int  # the link's number in its message (see the links table)
    at: float
    ip: str | None
    user_agent: str | None
    method: str
    purpose: str | None = None

    def as_open(self) -> OpenEvent:
        """The open-shaped view that enrichment and verdicts take."""
        return OpenEvent(self.message_id, self.at, self.ip, self.user_agent, self.method, self.purpose)


class StoredClick(NamedTuple):
    """A click already stored, as the click rules see it when a newer click changes its verdict: the address
    as kept (``DEADPIXEL_IP_MODE``) and the verdict it has."""

    id: int
    message_id: str
    link: int
    at: float
    ip: str | None
    kind: str | None
    reason: str | None
    rule: str | None
