"""Best send hours: when a recipient usually reads, and when a campaign's audience does.

A recipient's usual hour is the hour of the day most of their human opens (``human`` or ``proxy``; Apple's
prefetch and scanners never count) fall in, in their own time zone where the opens' country has one zone
(from the tz database's ``zone.tab``), else in the dashboard's zone (DEADPIXEL_TIMEZONE). The next best time
to send them something is the next start of that hour, always within 24 hours; without any history, the
audience's best hour is used. An audience's best hours are read from each message's first human open
(``first_human_opens``: one vote per recipient, so nobody who reopens a mail ten times outweighs ten readers),
in the dashboard's zone: the clock the person sending reads.
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Connection, func, select

from deadpixel.reports.analytics import _campaign_id
from deadpixel.store import chains, rollups
from deadpixel.store.schema import messages, open_slots, opens

ZONE_TAB = Path("/usr/share/zoneinfo/zone.tab")
PEOPLE = ("human", "proxy")
BEST = 3  # hours the campaign page names


@functools.cache
def country_zones(path: Path = ZONE_TAB) -> dict[str, str]:
    """Country code -> its time zone, for the countries with exactly one (empty when the file is missing)."""
    zones: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split("\t")
        if line.startswith("#") or len(fields) < 3:
            continue
        zones.setdefault(fields[0].upper(), []).append(fields[2])
    return {country: names[0] for country, names in zones.items() if len(names) == 1}


def zone_of(country: str | None, default: ZoneInfo) -> ZoneInfo:
    name = country_zones().get((country or "").upper())
    if name is None:
        return default
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        return default


def usual_hour(conn: Connection, address: str, default: ZoneInfo) -> tuple[int, ZoneInfo] | None:
    """The hour of the day (and the zone it is in) of most of ``address``'s human opens; None without any."""
    ids = list(conn.execute(select(messages.c.id).where(messages.c.recipient == address)).scalars())
    if not ids:
        return None
    chain = chains.open_ids(ids)
    rows = conn.execute(
        select(opens.c.at, opens.c.country).where(
            opens.c.id.in_(select(chain.c.id)), opens.c.kind.in_(PEOPLE)
        )
    ).all()
    if not rows:
        return None
    country = Counter(c for _, c in rows if c).most_common(1)
    zone = zone_of(country[0][0] if country else None, default)
    hours = Counter(datetime.fromtimestamp(at, zone).hour for at, _ in rows)
    top = max(hours.values())
    return min(h for h, n in hours.items() if n == top), zone


def next_at_hour(now: datetime, hour: int, zone: ZoneInfo) -> datetime:
    """The next start of ``hour`` in ``zone`` after ``now`` (aware), within 24 hours."""
    local = now.astimezone(zone)
    for day in (0, 1, 2):  # a day whose hour is skipped by a clock change tries the next
        candidate = datetime.combine(local.date() + timedelta(days=day), time(hour), zone)
        if candidate > now and candidate - now <= timedelta(hours=24):
            return candidate
    return now + timedelta(hours=24)


def next_best_time(
    conn: Connection, address: str, now: datetime, default: ZoneInfo, audience_hour: int | None
) -> datetime:
    """When to send ``address`` something: the next start of its usual hour, or of the audience's best hour
    (in ``default``) for an address without history, or ``now`` when neither is known."""
    usual = usual_hour(conn, address, default)
    if usual is not None:
        return next_at_hour(now, *usual)
    if audience_hour is not None:
        return next_at_hour(now, audience_hour, default)
    return now


def audience_hours(conn: Connection, campaign: str | None, zone: ZoneInfo) -> dict[str, Any]:
    """The campaign's (or every) human opens by local hour of the day, and the best hours: read from the
    charts' rollups (opens per quarter hour), so it costs a few hundred rows however many opens there are.
    Fold the rollups first (``rollups.refresh``), as every chart does."""
    s = open_slots.c
    query = select(s.slot, func.sum(s.human)).group_by(s.slot)
    if campaign is not None:
        query = query.where(s.campaign_id == _campaign_id(conn, campaign))
    counts = [0] * 24
    for slot, n in conn.execute(query):
        counts[datetime.fromtimestamp(int(slot) * rollups.SLOT, zone).hour] += int(n or 0)
    ranked = sorted((h for h in range(24) if counts[h]), key=lambda h: (-counts[h], h))
    return {"timezone": zone.key, "human_opens": sum(counts), "by_hour": counts, "best_hours": ranked[:BEST]}


def audience_best_hour(conn: Connection, campaign: str | None, zone: ZoneInfo) -> int | None:
    best = audience_hours(conn, campaign, zone)["best_hours"]
    return int(best[0]) if best else None
