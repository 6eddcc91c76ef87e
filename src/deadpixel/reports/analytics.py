"""Every number deadpixel reports, defined once, and the queries behind them.

Campaign figures come from the counters on the message rows, not from scanning events, so a report on a
campaign with millions of opens reads one row per message.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, case, func, select, text

from deadpixel.errors import DeadpixelError
from deadpixel.events import HIDDEN_LINK
from deadpixel.store import chains, rollups
from deadpixel.store.bounce_reasons import Reason, sender_side
from deadpixel.store.events import CLICK, OPEN, EventKind
from deadpixel.store.schema import (
    campaigns,
    clicks,
    first_human_opens,
    links,
    messages,
    open_slots,
    open_values,
    relayed,
)

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
    "bounces": (
        "sent messages that bounced (hard or soft) by the reason of their latest failure (by_reason; see"
        " bounces.md; `unclassified`: stored before reasons were, until `bounces reclassify`), and how many"
        " of them failed for a sender-side reason (authentication, blocked, spam/content, rate limited,"
        " message too big): a problem of the sending side, whose recipients were not suppressed"
    ),
    "open_rate": (
        "unique_opens / delivered (0 when nothing was delivered); delivered is sent until a bounce is"
        " recorded for the campaign"
    ),
    "human_open_rate": "human_opens / delivered: the honest open rate",
    "machine_open_rate": (
        "machine_opens / delivered: messages only a machine fetched (0 when nothing was delivered)"
    ),
    "opens_per_opener": "total_opens / unique_opens: how often an opened message was fetched (0: none was)",
    "unique_clicks": (
        "messages with at least one `human` click on a tracked link; HEAD requests, link scanners and"
        " prefetches are recorded with their verdict but not counted"
    ),
    "total_clicks": "every recorded click, whatever its verdict",
    "human_clicks": "every `human` or `proxy` click: a person following a link",
    "machine_clicks": (
        "clicks by link scanners, HEAD requests and prefetches, each stored with its verdict and reason and"
        " never counted as a person's (the click rules: docs/enrichment.md, Clicks)"
    ),
    "click_rate": "unique_clicks / delivered (0 when nothing was delivered)",
    "click_to_open_rate": (
        "unique_clicks / unique_opens (0 when nothing was opened); never above 1, because a human click"
        " counts its message as opened"
    ),
    "time_to_first_open": (
        "per sent message with a known send time (sent by deadpixel, not hand-made pixels) that a person"
        " opened: from sent_at to its first `human` or `proxy` open, so Apple's prefetch and scanners at"
        " delivery do not count as reading it; the median and how many messages fall in each bucket"
    ),
    "opens_over_time": (
        "every recorded open (as total_opens) per hour over the first 3 days with opens, and per day over"
        " all of them, in DEADPIXEL_TIMEZONE; split into human (human, proxy), machine (prefetch, scanner)"
        " and the rest (your own, unclassified)"
    ),
    "heatmap": "every recorded open by weekday and hour of the day in DEADPIXEL_TIMEZONE",
    "breakdowns": (
        "every recorded open by verdict (kind), mail client, device, OS and country; the 8 largest values"
        " of each, unknown values as null"
    ),
    "top_links": (
        "per tracked URL: every click, human clicks, and unique_clickers (messages with a human click on it)"
    ),
}


class UnknownCampaign(DeadpixelError, LookupError):
    """No campaign has the name asked for (the one argument)."""

    def one_line(self) -> str:
        return f"no campaign named {self.args[0]!r}"


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
        func.coalesce(func.sum(m.human_click_count), 0),
        func.coalesce(func.sum(m.machine_click_count), 0),
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
        "machine_open_rate": rate(machine, delivered),
        "opens_per_opener": rate(total_opens, unique_opens),
        "unique_clicks": unique_clicks,
        "total_clicks": total_clicks,
        "human_clicks": int(row[13]),
        "machine_clicks": int(row[14]),
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


def _filtered(conn: Connection, query: Any, kind: EventKind, only: EventFilter) -> Any:
    c = kind.table.c
    if only.campaign is not None:
        query = query.where(messages.c.campaign_id == _campaign_id(conn, only.campaign))
    if only.message_id is not None:
        query = query.where(c.message_id == only.message_id)
        if kind.chained:  # opens have no index on message_id: follow the message's chain
            query = query.where(c.id.in_(select(chains.open_ids([only.message_id]).c.id)))
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


# What a listing shows of each kind's events, in its order (the API's, CLI's and dashboard's fields).
_REQUEST = ("ip", "user_agent", "method", "kind", "reason", "client", "device", "os", "country")
LISTED = {
    OPEN.name: ("id", "message_id", "at", *_REQUEST, "region", "city", "network_owner"),
    CLICK.name: ("id", "message_id", "link", "url", "at", *_REQUEST, "network_owner"),  # and where it led
}


def list_events(
    conn: Connection,
    kind: EventKind,
    *,
    campaign: str | None = None,
    message_id: str | None = None,
    limit: int = 100,
    only: EventFilter | None = None,
) -> list[dict[str, Any]]:
    """Recorded events of a kind, newest first (``only`` for the API's filters; campaign and message are
    shortcuts)."""
    only = only or EventFilter(campaign=campaign, message_id=message_id)
    query = (
        select(
            *(kind.column(name) for name in LISTED[kind.name]),
            messages.c.recipient,
            messages.c.subject,
            campaigns.c.name.label("campaign"),
        )
        .select_from(kind.with_message())
        .limit(limit)
    )
    query = _filtered(conn, query, kind, only)
    return [{**row._asdict(), "at": iso(row.at)} for row in conn.execute(query)]


def list_opens(conn: Connection, **given: Any) -> list[dict[str, Any]]:
    """Recorded opens, newest first (``list_events``)."""
    return list_events(conn, OPEN, **given)


def list_clicks(conn: Connection, **given: Any) -> list[dict[str, Any]]:
    """Recorded clicks, newest first, with the URL each one led to (``list_events``)."""
    return list_events(conn, CLICK, **given)


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


# --- chart data: read from the rollups (deadpixel.store.rollups), so fold them first ---------------------

BREAKDOWNS = rollups.FIELDS
HOURLY_DAYS = 3
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAY = 86400.0
# Upper bounds in seconds of the time-to-first-open buckets, with their labels; the last is open-ended.
TIME_TO_OPEN_BUCKETS = (
    (300.0, "< 5 min"),
    (900.0, "5-15 min"),
    (3600.0, "15-60 min"),
    (3 * 3600.0, "1-3 h"),
    (6 * 3600.0, "3-6 h"),
    (12 * 3600.0, "6-12 h"),
    (DAY, "12-24 h"),
    (2 * DAY, "1-2 days"),
    (7 * DAY, "2-7 days"),
    (math.inf, "7 days or more"),
)


def _rollup_campaign(conn: Connection, campaign: str | None) -> int | None:
    """The rollups' key of a campaign (None: every campaign, and the messages without one)."""
    return None if campaign is None else _campaign_id(conn, campaign)


Slot = tuple[datetime, int, int, int]  # a quarter hour's local start, opens, human, machine


Window = tuple[float, float]  # (since, until) in seconds since the epoch: the charts' time range


def _local_slots(
    conn: Connection, campaign: str | None, zone: ZoneInfo, since: float | None = None
) -> list[Slot]:
    """Opens per quarter hour as (local start, opens, human, machine), oldest first (from ``since``)."""
    s = open_slots.c
    query = select(s.slot, func.sum(s.opens), func.sum(s.human), func.sum(s.machine)).group_by(s.slot)
    key = _rollup_campaign(conn, campaign)
    if key is not None:
        query = query.where(s.campaign_id == key)
    if since is not None:
        query = query.where(s.slot >= -(-int(since) // rollups.SLOT))
    rows = conn.execute(query.having(func.sum(s.opens) != 0).order_by(s.slot)).all()
    return [
        (datetime.fromtimestamp(slot * rollups.SLOT, zone), int(n), int(human), int(machine))
        for slot, n, human, machine in rows
    ]


def opens_over_time(conn: Connection, campaign: str | None, zone: ZoneInfo) -> dict[str, Any]:
    """Opens per local hour over the first HOURLY_DAYS days with opens, and per local day over all of them.

    Each bucket splits opens as unique_opens splits messages: human (and proxy), machine, and the rest
    (your own, unclassified). Empty buckets between the first and the last are listed, so an axis is time.
    """
    return _over_time(_local_slots(conn, campaign, zone), zone)


def _over_time(slots: list[Slot], zone: ZoneInfo, window: Window | None = None) -> dict[str, Any]:
    """Without a window, hours over the first HOURLY_DAYS days with opens and days over all of them; with
    one, hours over its last HOURLY_DAYS days at most and days over all of it, empty ones included."""
    if not slots:
        return {"timezone": zone.key, "hourly": [], "daily": []}
    first_day, last_day = slots[0][0].date(), slots[-1][0].date()
    hourly_end = min(first_day + timedelta(days=HOURLY_DAYS), last_day + timedelta(days=1))
    begin = int(datetime.combine(first_day, datetime.min.time(), zone).timestamp())
    end = int(datetime.combine(hourly_end, datetime.min.time(), zone).timestamp())
    if window is not None:
        since, until = window
        first_day, last_day = _local_hour(since, zone).date(), _local_hour(until, zone).date()
        begin = int(_local_hour(max(since, until - HOURLY_DAYS * DAY), zone).timestamp())
        end = int(_local_hour(until, zone).timestamp()) + 3600
    hours: dict[int, list[int]] = {}
    days: dict[date, list[int]] = {}
    for start, n, human, machine in slots:
        _add_counts(days.setdefault(start.date(), [0, 0, 0]), n, human, machine)
        hour = int(start.timestamp()) - start.minute * 60  # the start of its local hour
        if begin <= hour < end:
            _add_counts(hours.setdefault(hour, [0, 0, 0]), n, human, machine)
    hourly = [
        _bucket(
            "hour", datetime.fromtimestamp(t, zone).isoformat(timespec="minutes"), hours.get(t, [0, 0, 0])
        )
        for t in range(begin, end, 3600)
    ]
    daily = [
        _bucket("day", day.isoformat(), days.get(day, [0, 0, 0]))
        for day in (first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1))
    ]
    return {"timezone": zone.key, "hourly": hourly, "daily": daily}


def _local_hour(timestamp: float, zone: ZoneInfo) -> datetime:
    """The start of the local hour a moment falls in (a zone's offset may be a half hour)."""
    return datetime.fromtimestamp(timestamp, zone).replace(minute=0, second=0, microsecond=0)


def _local_minute(timestamp: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(timestamp, zone).isoformat(timespec="minutes")


def _add_counts(counts: list[int], n: int, human: int, machine: int) -> None:
    counts[0] += n
    counts[1] += human
    counts[2] += machine


def _bucket(unit: str, start: str, counts: list[int]) -> dict[str, Any]:
    return {unit: start, "opens": counts[0], "human": counts[1], "machine": counts[2]}


def heatmap(conn: Connection, campaign: str | None, zone: ZoneInfo) -> dict[str, Any]:
    """Opens by local weekday (Monday first) and hour: ``cells[weekday][hour]``."""
    return _heatmap(_local_slots(conn, campaign, zone), zone)


def _heatmap(slots: list[Slot], zone: ZoneInfo) -> dict[str, Any]:
    cells = [[0] * 24 for _ in range(7)]
    for start, n, _, _ in slots:
        cells[start.weekday()][start.hour] += n
    return {"timezone": zone.key, "weekdays": list(WEEKDAYS), "cells": cells}


def breakdown(conn: Connection, campaign: str | None, field: str, limit: int = 8) -> list[dict[str, Any]]:
    """Opens by ``field`` (one of BREAKDOWNS), largest first; unknown values as None."""
    if field not in BREAKDOWNS:
        raise ValueError(f"no breakdown by {field!r}")
    v = open_values.c
    total = func.sum(v.opens)
    query = select(v.value, total).where(v.field == field).group_by(v.value).having(total != 0)
    key = _rollup_campaign(conn, campaign)
    if key is not None:
        query = query.where(v.campaign_id == key)
    rows = conn.execute(query.order_by(total.desc(), v.value).limit(limit))
    return [{"value": value or None, "opens": int(n)} for value, n in rows]


def time_to_first_open(conn: Connection, campaign: str | None) -> dict[str, Any]:
    """From send to the first human (or proxy) open, over the sent messages with a known send time.

    Read from the rollups' index by campaign and wait: the buckets are counted and the middle found
    without visiting a message row.
    """
    f = first_human_opens.c
    where = []
    key = _rollup_campaign(conn, campaign)
    if key is not None:
        where.append(f.campaign_id == key)
    bucket = case(
        *((f.wait < bound, i) for i, (bound, _) in enumerate(TIME_TO_OPEN_BUCKETS[:-1])),
        else_=len(TIME_TO_OPEN_BUCKETS) - 1,
    )
    counts = [0] * len(TIME_TO_OPEN_BUCKETS)
    for index, n in conn.execute(select(bucket, func.count()).where(*where).group_by(bucket)):
        counts[int(index)] = int(n)
    opened = sum(counts)
    median = None
    if opened:
        middle = select(f.wait).where(*where).order_by(f.wait).offset((opened - 1) // 2).limit(2 - opened % 2)
        median = max(0.0, statistics.fmean(float(w) for w in conn.execute(middle).scalars()))
    return {
        "messages": opened,
        "median_seconds": median,
        "buckets": [
            {"label": label, "below_seconds": None if math.isinf(bound) else bound, "messages": n}
            for (bound, label), n in zip(TIME_TO_OPEN_BUCKETS, counts, strict=True)
        ],
    }


def top_links(conn: Connection, campaign: str | None, limit: int = 10) -> list[dict[str, Any]]:
    """Tracked links by human clicks: total clicks, human clicks and unique human clickers per URL."""
    c = clicks.c
    human = c.kind == "human"
    query = (
        select(
            links.c.url,
            func.count().label("clicks"),
            func.coalesce(func.sum(case((human, 1), else_=0)), 0).label("human_clicks"),
            func.count(func.distinct(case((human, c.message_id)))).label("clickers"),
        )
        .select_from(
            clicks.join(links, (links.c.message_id == c.message_id) & (links.c.number == c.link)).join(
                messages, messages.c.id == c.message_id
            )
        )
        .where(c.link != HIDDEN_LINK)  # the hidden link is no link of the author's
        .group_by(links.c.url)
    )
    if campaign is not None:
        query = query.where(messages.c.campaign_id == _campaign_id(conn, campaign))
    query = query.order_by(text("human_clicks DESC"), text("clicks DESC"), links.c.url).limit(limit)
    return [
        {"url": url, "clicks": int(n), "human_clicks": int(h), "unique_clickers": int(u)}
        for url, n, h, u in conn.execute(query)
    ]


def campaign_stats(conn: Connection, campaign: str | None, zone: ZoneInfo) -> dict[str, Any]:
    """The report plus every chart's data: what `report --json`, the API's stats and the dashboard show."""
    from deadpixel.reports.variants import ab_test

    found = {**headline(conn, campaign), **chart_data(conn, campaign, zone)}
    found["ab_test"] = None if campaign is None else ab_test(conn, campaign)
    return found


def headline(conn: Connection, campaign: str | None) -> dict[str, Any]:
    """The report, read from the message rows, and the time to first open, read from the rollups."""
    return {
        **report(conn, campaign),
        "bounces": bounce_reasons(conn, campaign),
        "time_to_first_open": time_to_first_open(conn, campaign),
    }


def sender_side_notice(count: int) -> str | None:
    """What the report and the dashboard say when bounces are the sending side's own problem."""
    if not count:
        return None
    return (
        f"{count} bounce{'s are' if count != 1 else ' is'} a sender-side problem (authentication/blocked/"
        "spam/rate): check SPF, DKIM, DMARC and the sending IP's reputation; these recipients were not"
        " suppressed."
    )


UNCLASSIFIED = "unclassified"  # a bounce stored before reasons were, not yet reclassified


def bounce_reasons(conn: Connection, campaign: str | None) -> dict[str, Any]:
    """Bounced sent messages by the reason of their latest failure, most first, and the sender-side ones."""
    m = messages.c
    query = select(m.bounce_reason_code, func.count()).where(m.status == "sent", m.bounce.is_not(None))
    if campaign is not None:
        query = query.where(m.campaign_id == _campaign_id(conn, campaign))
    counts = conn.execute(query.group_by(m.bounce_reason_code)).all()
    by_reason = {
        code or UNCLASSIFIED: int(n) for code, n in sorted(counts, key=lambda row: (-row[1], row[0] or ""))
    }
    known = {reason.value for reason in Reason}
    ours = sum(n for code, n in by_reason.items() if code in known and sender_side(Reason(code)))
    return {"by_reason": by_reason, "sender_side": ours}


def chart_data(
    conn: Connection, campaign: str | None, zone: ZoneInfo, window: Window | None = None
) -> dict[str, Any]:
    """The numbers read from the rollups (and the clicks): opens over time, heatmap, breakdowns, links.

    A ``window`` narrows opens over time and the heatmap to its time; the breakdowns and links stay whole.
    """
    slots = _local_slots(conn, campaign, zone, None if window is None else window[0])
    if window is not None:
        slots = [slot for slot in slots if slot[0].timestamp() <= window[1]]
    return {
        "opens_over_time": _over_time(slots, zone, window),
        "heatmap": _heatmap(slots, zone),
        "breakdowns": {field: breakdown(conn, campaign, field) for field in BREAKDOWNS},
        "top_links": top_links(conn, campaign),
    }


def opens_per_day(conn: Connection, days: int, now: float | None = None) -> dict[str, list[int]]:
    """Opens per UTC day of every campaign over the last ``days`` days, oldest first: the sparklines."""
    s = open_slots.c
    today = int((time.time() if now is None else now) // DAY)
    per_day = int(DAY) // rollups.SLOT
    day = s.slot // per_day
    query = (
        select(campaigns.c.name, day, func.sum(s.opens))
        .select_from(open_slots.join(campaigns, campaigns.c.id == s.campaign_id))
        .where(s.slot >= (today - days + 1) * per_day)
        .group_by(campaigns.c.name, day)
    )
    found: dict[str, list[int]] = {}
    for name, d, n in conn.execute(query):
        index = int(d) - (today - days + 1)
        if 0 <= index < days:
            found.setdefault(name, [0] * days)[index] = int(n)
    return found


# --- a campaign's recipients, searched, sorted and paged ----------------------------------------------

RECIPIENT_SORTS = ("status", "opens", "first_open", "recipient")
RECIPIENT_STATUSES = ("not opened", "machine only", "opened", "clicked")  # in the order status sorts


@dataclass(frozen=True, slots=True)
class RecipientView:
    """Which recipients of a campaign to show: ``search`` is part of the address, any case."""

    search: str = ""
    sort: str = "status"
    descending: bool = True
    page: int = 1
    per_page: int = 50
    segment: str = ""  # one of deadpixel.reports.segments.CAMPAIGN_SEGMENTS, or "" for every recipient


def recipients(
    conn: Connection, campaign: str, view: RecipientView, within: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """One page of a campaign's messages with their status (see RECIPIENT_STATUSES), and how many match;
    ``within``: only messages to these lower-cased addresses (a query of them: a segment's).

    Ties are broken by message id, so paging never repeats or skips a row.
    """
    m = messages.c
    status = case(
        (m.human_click_count > 0, 3),
        (m.human_open_count > 0, 2),
        (m.open_count - m.self_open_count > 0, 1),
        else_=0,
    )
    where = [m.campaign_id == _campaign_id(conn, campaign)]
    if within is not None:
        where.append(func.lower(m.recipient).in_(within))
    if view.search:
        # SQLite's lower() folds ASCII only: an address typed in its own case matches too.
        where.append(
            func.lower(m.recipient).contains(view.search.lower(), autoescape=True)
            | m.recipient.contains(view.search, autoescape=True)
        )
    total = int(conn.execute(select(func.count()).select_from(messages).where(*where)).scalar_one())
    key = {"status": status, "opens": m.open_count, "first_open": m.first_open_at, "recipient": m.recipient}
    order = key[view.sort].desc() if view.descending else key[view.sort].asc()
    query = (
        _message_query()
        .add_columns(status.label("status_rank"))
        .where(*where)
        .order_by(order.nulls_last(), m.id)
        .limit(view.per_page)
        .offset((view.page - 1) * view.per_page)
    )
    rows = []
    for row in conn.execute(query):
        found = _message(row)
        found["recipient_status"] = RECIPIENT_STATUSES[found.pop("status_rank")]
        rows.append(found)
    return rows, total
