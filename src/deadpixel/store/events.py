"""What an event kind is to the store: one description per kind, which writing, counters, reclassification,
retention, listing and export take instead of having an open and a click twin of each.

An open and a click are the same event told twice: a request for a signed token, enriched and judged the same
way, stored in a table of its own and counted on its message. Only the description tells them apart; the
tables and the message's counter columns stay as they are (the kind maps onto them, no migration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Table

from deadpixel.security.tokens import CLICK as CLICK_PURPOSE
from deadpixel.security.tokens import PIXEL as PIXEL_PURPOSE
from deadpixel.store.schema import campaigns, clicks, links, messages, opens

# What enrichment writes on an event (``deadpixel.enrich.classify.Enrichment``, in its order): rewritten by
# reclassification, the same columns on every kind's table.
ENRICHED_COLUMNS = (
    "client", "device", "os", "country", "region", "city", "asn", "network_owner", "kind", "reason", "rule",
)  # fmt: skip

# What retention drops from an event past its period: the address and what locates or fingerprints a person.
# Client, device, country, verdict and time stay, so reports do not change.
RAW_DETAIL = ("ip", "user_agent", "region", "city")


@dataclass(frozen=True, slots=True)
class EventKind:
    """One kind of tracked event and where the store keeps it.

    ``name`` is the word the rest uses (webhook event ``open``, counters ``open_count``...); ``chained``
    says the kind's rows form a chain per message from ``messages.last_open_id`` instead of an index on
    ``message_id`` (see ``deadpixel.store.chains``).
    """

    name: str
    table: Table
    token_purpose: bytes  # what the kind's signed tokens mix into their MAC (``deadpixel.security.tokens``)
    chained: bool = False
    retained: tuple[str, ...] = RAW_DETAIL  # cleared by retention

    def counter(self, verdict: str = "") -> str:
        """The message's counter column: ``counter()`` all, ``counter("human")`` per verdict group."""
        return f"{verdict}_{self.name}_count" if verdict else f"{self.name}_count"

    @property
    def first_at(self) -> str:
        return f"first_{self.name}_at"

    @property
    def last_at(self) -> str:
        return f"last_{self.name}_at"

    def column(self, name: str) -> Column[Any]:
        """A column of the kind's events by name; ``url`` is the link's URL for a kind with links."""
        if name == "url":
            return links.c.url
        return self.table.c[name]

    def with_message(self) -> Any:
        """The kind's events joined with their message, its campaign and, for a kind with links, the link
        (outer joins: an event outlives nothing, but a listing must not lose one whose message is gone)."""
        table = self.table
        joined: Any = table
        if "link" in table.c:
            joined = joined.outerjoin(
                links, (links.c.message_id == table.c.message_id) & (links.c.number == table.c.link)
            )
        return joined.outerjoin(messages, messages.c.id == table.c.message_id).outerjoin(
            campaigns, campaigns.c.id == messages.c.campaign_id
        )


OPEN = EventKind("open", opens, PIXEL_PURPOSE, chained=True)
CLICK = EventKind("click", clicks, CLICK_PURPOSE)
EVENT_KINDS = (OPEN, CLICK)
