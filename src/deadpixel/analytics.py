"""Every number deadpixel reports, defined once, and the queries behind them.

Campaign figures come from the counters on the message rows, not from scanning events, so a report on a
campaign with millions of opens reads one row per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Integer, Table, case, cast, func, select

from deadpixel.store.schema import campaigns, clicks, links, messages, opens, relayed

DEFINITIONS = {
    "sent": (
        "messages the SMTP server accepted from deadpixel, plus pixels made by hand with `pixel new` (sent"
        " from your own client); failed sends and drafts (`--dry-run`) are not counted"
    ),
    "untracked": (
        "copies the relay delivered without a pixel (plain text only, signed or encrypted, or asked not to"
        " track); not part of sent, since nobody could have been seen opening them"
    ),
    "unique_opens": (
        "messages with at least one open that is not your own (kind `self`), or with a human click: a click"
        " proves the message was displayed even when its images were blocked"
    ),
    "human_opens": (
        "messages with at least one `human` or `proxy` open (a proxy fetches when a person opens) or a human"
        " click"
    ),
    "machine_opens": "messages opened only by `prefetch` or `scanner` fetches, so unique = human + machine",
    "total_opens": "every recorded open event, whatever its verdict",
    "capped_opens": (
        "opens answered but not stored as events because one message had more than DEADPIXEL_OPEN_CAP"
        " in a minute on one server (a flood); not in total_opens"
    ),
    "bounced": (
        "sent messages that bounced hard: a permanent (5.x.x) failure, or the last"
        " DEADPIXEL_SOFT_BOUNCE_LIMIT messages to the address all bounced soft (see bounces.md)"
    ),
    "soft_bounced": "sent messages with only temporary (4.x.x) failures reported so far; still in delivered",
    "delivered": "sent minus bounced; equal to sent until a bounce is recorded",
    "bounce_rate": "bounced / sent (0 when nothing was sent)",
    "complaints": "sent messages whose recipient reported them as spam (a feedback-loop report)",
    "open_rate": (
        "unique_opens / delivered (0 when nothing was delivered); delivered is sent until a bounce is"
        " recorded for the campaign"
    ),
    "human_open_rate": "human_opens / delivered: the honest open rate",
    "unique_clicks": (
        "messages with at least one `human` click on a tracked link; HEAD requests, link scanners and"
        " prefetches are recorded with their verdict but not counted"
    ),
    "total_clicks": "every recorded click, whatever its verdict",
    "click_rate": "unique_clicks / delivered (0 when nothing was delivered)",
    "click_to_open_rate": (
        "unique_clicks / unique_opens (0 when nothing was opened); never above 1, because a human click"
        " counts its message as opened"
    ),
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
    m = messages.c

    def messages_where(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    clicked = m.human_click_count > 0
    query = select(
        func.count(),
        messages_where((m.open_count - m.self_open_count > 0) | clicked),
        messages_where((m.human_open_count > 0) | clicked),
        messages_where((m.human_open_count == 0) & (m.machine_open_count > 0) & ~clicked),
        func.coalesce(func.sum(m.open_count), 0),
        messages_where(clicked),
        func.coalesce(func.sum(m.click_count), 0),
        func.min(m.first_open_at),
        func.max(m.last_open_at),
        func.coalesce(func.sum(m.capped_open_count), 0),
        messages_where(m.bounce == "hard"),
        messages_where(m.bounce == "soft"),
        messages_where(m.complained_at.is_not(None)),
    )
    untracked = select(func.count()).where(relayed.c.status == "sent", relayed.c.untracked.is_not(None))
    query = query.where(m.status == "sent")
    if campaign is not None:
        cid = _campaign_id(conn, campaign)
        query = query.where(m.campaign_id == cid)
        untracked = untracked.where(relayed.c.campaign_id == cid)
    row = conn.execute(query).one()
    sent, unique_opens, human, machine, total_opens, unique_clicks, total_clicks = (
        int(value) for value in row[:7]
    )
    first_open, last_open = row[7], row[8]
    bounced, soft_bounced, complaints = (int(value) for value in row[10:13])
    delivered = sent - bounced
    return {
        "campaign": campaign,
        "sent": sent,
        "untracked": int(conn.execute(untracked).scalar_one()),
        "bounced": bounced,
        "soft_bounced": soft_bounced,
        "delivered": delivered,
        "bounce_rate": rate(bounced, sent),
        "complaints": complaints,
        "unique_opens": unique_opens,
        "human_opens": human,
        "machine_opens": machine,
        "total_opens": total_opens,
        "capped_opens": int(row[9]),
        "open_rate": rate(unique_opens, delivered),
        "human_open_rate": rate(human, delivered),
        "unique_clicks": unique_clicks,
        "total_clicks": total_clicks,
        "click_rate": rate(unique_clicks, delivered),
        "click_to_open_rate": rate(unique_clicks, unique_opens),
        "first_open_at": iso(first_open),
        "last_open_at": iso(last_open),
        "definitions": DEFINITIONS,
    }


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to list: every field narrows; ``after_id`` is the id of the last one already seen.

    Events are listed newest first by (at, id), so continuing after the last one seen pages through them
    without skipping or repeating any while new ones arrive (an offset would shift under them).
    """

    campaign: str | None = None
    message_id: str | None = None
    since: float | None = None  # at >= since
    until: float | None = None  # at < until
    kind: str | None = None
    after_id: int | None = None


def _filtered(conn: Connection, query: Any, table: Table, only: EventFilter) -> Any:
    c = table.c
    if only.campaign is not None:
        query = query.where(messages.c.campaign_id == _campaign_id(conn, only.campaign))
    if only.message_id is not None:
        query = query.where(c.message_id == only.message_id)
    if only.since is not None:
        query = query.where(c.at >= only.since)
    if only.until is not None:
        query = query.where(c.at < only.until)
    if only.kind is not None:
        query = query.where(c.kind == only.kind)
    if only.after_id is not None:
        at = select(c.at).where(c.id == only.after_id).scalar_subquery()
        query = query.where((c.at < at) | ((c.at == at) & (c.id < only.after_id)))
    return query.order_by(c.at.desc(), c.id.desc())


def list_opens(
    conn: Connection,
    *,
    campaign: str | None = None,
    message_id: str | None = None,
    limit: int = 100,
    only: EventFilter | None = None,
) -> list[dict[str, Any]]:
    """Recorded opens, newest first (``only`` for the API's filters; campaign and message are shortcuts)."""
    only = only or EventFilter(campaign=campaign, message_id=message_id)
    query = (
        select(
            opens.c.id,
            opens.c.message_id,
            opens.c.at,
            opens.c.ip,
            opens.c.user_agent,
            opens.c.method,
            opens.c.kind,
            opens.c.reason,
            opens.c.client,
            opens.c.device,
            opens.c.os,
            opens.c.country,
            opens.c.region,
            opens.c.city,
            opens.c.network_owner,
            messages.c.recipient,
            messages.c.subject,
            campaigns.c.name.label("campaign"),
        )
        .select_from(
            opens.outerjoin(messages, messages.c.id == opens.c.message_id).outerjoin(
                campaigns, campaigns.c.id == messages.c.campaign_id
            )
        )
        .limit(limit)
    )
    query = _filtered(conn, query, opens, only)
    return [{**row._asdict(), "at": iso(row.at)} for row in conn.execute(query)]


def list_clicks(
    conn: Connection,
    *,
    campaign: str | None = None,
    message_id: str | None = None,
    limit: int = 100,
    only: EventFilter | None = None,
) -> list[dict[str, Any]]:
    """Recorded clicks, newest first, with the URL each one led to."""
    only = only or EventFilter(campaign=campaign, message_id=message_id)
    query = (
        select(
            clicks.c.id,
            clicks.c.message_id,
            clicks.c.link,
            links.c.url,
            clicks.c.at,
            clicks.c.ip,
            clicks.c.user_agent,
            clicks.c.method,
            clicks.c.kind,
            clicks.c.reason,
            clicks.c.client,
            clicks.c.device,
            clicks.c.os,
            clicks.c.country,
            clicks.c.network_owner,
            messages.c.recipient,
            messages.c.subject,
            campaigns.c.name.label("campaign"),
        )
        .select_from(
            clicks.outerjoin(
                links, (links.c.message_id == clicks.c.message_id) & (links.c.number == clicks.c.link)
            )
            .outerjoin(messages, messages.c.id == clicks.c.message_id)
            .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
        )
        .limit(limit)
    )
    query = _filtered(conn, query, clicks, only)
    return [{**row._asdict(), "at": iso(row.at)} for row in conn.execute(query)]


MESSAGE_COUNTERS = (
    "open_count",
    "human_open_count",
    "machine_open_count",
    "self_open_count",
    "capped_open_count",
    "click_count",
    "human_click_count",
    "machine_click_count",
    "self_click_count",
)
_MESSAGE_TIMES = (
    "created_at", "sent_at", "first_open_at", "last_open_at", "first_click_at", "last_click_at",
    "bounced_at", "complained_at",
)  # fmt: skip


def _message_query() -> Any:
    m = messages.c
    return select(
        m.id,
        m.recipient,
        m.subject,
        campaigns.c.name.label("campaign"),
        m.status,
        *(m[name] for name in _MESSAGE_TIMES),
        *(m[name] for name in MESSAGE_COUNTERS),
        m.bounce,
        m.soft_bounce_count,
        m.bounce_reason,
    ).select_from(messages.outerjoin(campaigns, campaigns.c.id == m.campaign_id))


def _message(row: Any) -> dict[str, Any]:
    """One message with its counters, and whether it counts in unique_opens and human_opens."""
    found = row._asdict()
    clicked = found["human_click_count"] > 0
    return {
        **found,
        # Still a sent message in the table (the SMTP server took it); shown as what became of it.
        "status": "bounced" if found["bounce"] == "hard" else found["status"],
        **{name: iso(found[name]) for name in _MESSAGE_TIMES},
        "opened": found["open_count"] - found["self_open_count"] > 0 or clicked,
        "opened_by_human": found["human_open_count"] > 0 or clicked,
    }


def list_messages(
    conn: Connection,
    *,
    campaign: str | None = None,
    limit: int = 100,
    after_id: str | None = None,
) -> list[dict[str, Any]]:
    """Messages, newest first by (created_at, id); ``after_id`` pages on like EventFilter.after_id."""
    m = messages.c
    query = _message_query().order_by(m.created_at.desc(), m.id.desc()).limit(limit)
    if campaign is not None:
        query = query.where(m.campaign_id == _campaign_id(conn, campaign))
    if after_id is not None:
        at = select(m.created_at).where(m.id == after_id).scalar_subquery()
        query = query.where((m.created_at < at) | ((m.created_at == at) & (m.id < after_id)))
    return [_message(row) for row in conn.execute(query)]


def get_message(conn: Connection, message_id: str) -> dict[str, Any] | None:
    row = conn.execute(_message_query().where(messages.c.id == message_id)).first()
    return None if row is None else _message(row)


def list_campaigns(conn: Connection) -> list[dict[str, Any]]:
    """Every campaign by name, with its report's figures (one report query per campaign)."""
    names = conn.execute(select(campaigns.c.name, campaigns.c.created_at).order_by(campaigns.c.name))
    found = []
    for name, created_at in names.all():
        figures = report(conn, name)
        del figures["definitions"], figures["campaign"]
        found.append({"name": name, "created_at": iso(created_at), **figures})
    return found


BREAKDOWNS = ("kind", "client", "device", "os", "country")
DAY = 86400.0


def opens_by_day(conn: Connection, campaign: str) -> list[dict[str, Any]]:
    """Opens per UTC day of one campaign, split as unique_opens splits messages (human/proxy, machine, self).

    Days without opens between the first and the last are listed with zeros, so a chart's axis is time.
    """
    o = opens.c
    day = cast(o.at / DAY, Integer)  # times are after 1970, so truncating is flooring (SQLite has no floor)
    human = func.sum(case((o.kind.in_(("human", "proxy")), 1), else_=0))
    machine = func.sum(case((o.kind.in_(("prefetch", "scanner")), 1), else_=0))
    query = (
        select(day.label("day"), func.count(), human, machine)
        .select_from(opens.join(messages, messages.c.id == o.message_id))
        .where(messages.c.campaign_id == _campaign_id(conn, campaign))
        .group_by(day)
        .order_by(day)
    )
    found = {int(row[0]): (int(row[1]), int(row[2] or 0), int(row[3] or 0)) for row in conn.execute(query)}
    if not found:
        return []
    days = range(min(found), max(found) + 1)
    return [
        {
            "day": datetime.fromtimestamp(d * DAY, UTC).date().isoformat(),
            "opens": found.get(d, (0, 0, 0))[0],
            "human": found.get(d, (0, 0, 0))[1],
            "machine": found.get(d, (0, 0, 0))[2],
        }
        for d in days
    ]


def breakdown(conn: Connection, campaign: str, field: str, limit: int = 8) -> list[dict[str, Any]]:
    """Opens of one campaign by ``field`` (one of BREAKDOWNS), largest first; unknown values as None."""
    if field not in BREAKDOWNS:
        raise ValueError(f"no breakdown by {field!r}")
    column = opens.c[field]
    query = (
        select(column, func.count().label("n"))
        .select_from(opens.join(messages, messages.c.id == opens.c.message_id))
        .where(messages.c.campaign_id == _campaign_id(conn, campaign))
        .group_by(column)
        .order_by(func.count().desc(), column)
        .limit(limit)
    )
    return [{"value": value, "opens": int(n)} for value, n in conn.execute(query)]
