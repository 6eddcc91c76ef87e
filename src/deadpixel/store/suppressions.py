"""The suppression list: who asked for no more campaign mail, and the campaign records behind the links."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from deadpixel.store.schema import campaign_recipients, campaigns, suppressions


def suppressed(conn: Connection, keys: Iterable[str]) -> set[str]:
    """Which of these lower-cased addresses are on the list."""
    wanted = sorted(set(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        query = select(suppressions.c.address).where(suppressions.c.address.in_(wanted[start : start + 500]))
        found.update(conn.execute(query).scalars())
    return found


def suppress(conn: Connection, address: str, source: str, campaign_id: int | None = None) -> bool:
    """Add ``address``; False when it was already there (unsubscribing twice is fine)."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(suppressions).values(
                    address=address.strip().lower(),
                    created_at=time.time(),
                    source=source,
                    campaign_id=campaign_id,
                )
            )
    except IntegrityError:
        return False
    return True


def unsuppress(conn: Connection, address: str) -> bool:
    result = conn.execute(delete(suppressions).where(suppressions.c.address == address.strip().lower()))
    return bool(result.rowcount)


def list_suppressions(conn: Connection) -> list[dict[str, Any]]:
    query = (
        select(suppressions.c.address, suppressions.c.created_at, suppressions.c.source, campaigns.c.name)
        .select_from(suppressions.outerjoin(campaigns, campaigns.c.id == suppressions.c.campaign_id))
        .order_by(suppressions.c.created_at)
    )
    return [
        {"address": a, "created_at": at, "source": source, "campaign": name}
        for a, at, source, name in conn.execute(query)
    ]


@dataclass(frozen=True, slots=True)
class LinkOwner:
    address: str
    campaign_id: int
    campaign: str


def link_owner(conn: Connection, unsubscribe_id: str) -> LinkOwner | None:
    """Whose unsubscribe link carries this id."""
    row = conn.execute(
        select(campaign_recipients.c.address, campaign_recipients.c.campaign_id, campaigns.c.name)
        .select_from(campaign_recipients.join(campaigns, campaigns.c.id == campaign_recipients.c.campaign_id))
        .where(campaign_recipients.c.unsubscribe_id == unsubscribe_id)
    ).first()
    return LinkOwner(*row) if row else None
