"""Every number deadpixel reports, defined once, and the queries behind them.

Campaign figures come from the counters on the message rows, not from scanning events, so a report on a
campaign with millions of opens reads one row per message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from deadpixel.store.schema import campaigns, messages, opens

DEFINITIONS = {
    "sent": "messages deadpixel sent, plus pixels made by hand with `pixel new` (sent from your own client)",
    "unique_opens": "messages opened at least once",
    "total_opens": "every recorded open event, whatever its verdict",
    "open_rate": "unique_opens / sent (0 when nothing was sent)",
}


class UnknownCampaign(LookupError):
    pass


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _campaign_id(conn: Connection, name: str) -> int:
    found = conn.execute(select(campaigns.c.id).where(campaigns.c.name == name)).scalar()
    if found is None:
        raise UnknownCampaign(name)
    return int(found)


def report(conn: Connection, campaign: str | None = None) -> dict[str, Any]:
    """Headline figures for one campaign, or for all messages when ``campaign`` is None."""
    query = select(
        func.count(),
        func.coalesce(func.sum(case((messages.c.open_count > 0, 1), else_=0)), 0),
        func.coalesce(func.sum(messages.c.open_count), 0),
        func.min(messages.c.first_open_at),
        func.max(messages.c.last_open_at),
    )
    if campaign is not None:
        query = query.where(messages.c.campaign_id == _campaign_id(conn, campaign))
    sent, unique_opens, total_opens, first_open, last_open = conn.execute(query).one()
    return {
        "campaign": campaign,
        "sent": int(sent),
        "unique_opens": int(unique_opens),
        "total_opens": int(total_opens),
        "open_rate": rate(int(unique_opens), int(sent)),
        "first_open_at": iso(first_open),
        "last_open_at": iso(last_open),
        "definitions": DEFINITIONS,
    }


def list_opens(
    conn: Connection,
    *,
    campaign: str | None = None,
    message_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Recorded opens, newest first."""
    query = (
        select(
            opens.c.message_id,
            opens.c.at,
            opens.c.ip,
            opens.c.user_agent,
            opens.c.method,
            messages.c.recipient,
            messages.c.subject,
            campaigns.c.name.label("campaign"),
        )
        .select_from(
            opens.outerjoin(messages, messages.c.id == opens.c.message_id).outerjoin(
                campaigns, campaigns.c.id == messages.c.campaign_id
            )
        )
        .order_by(opens.c.at.desc(), opens.c.id.desc())
        .limit(limit)
    )
    if campaign is not None:
        query = query.where(messages.c.campaign_id == _campaign_id(conn, campaign))
    if message_id is not None:
        query = query.where(opens.c.message_id == message_id)
    return [{**row._asdict(), "at": iso(row.at)} for row in conn.execute(query)]
