"""Segments: which recipients opened, which did not, which only a machine fetched, defined once.

A segment is a definition, written as one line a user can type and save:

- ``CAMPAIGN:WHO`` with WHO one of CAMPAIGN_SEGMENTS: the recipients of one campaign;
- ``@inactive:DAYS``, ``@never-opened``, ``@client:NAME``, ``@device:NAME``, ``@country:CODE``: the whole
  audience, every address deadpixel has sent a message to.

Each is evaluated when it is used, from the counters on the message rows (the same facts the reports count:
``human_open_count`` is human and proxy opens), grouped by the lower-cased address, so a recipient with two
messages in a campaign is one row. The SQL is plain enough to run the same on SQLite and PostgreSQL. The
CLI, the API, the dashboard and ``campaign send --segment`` only present what is here, with DEFINITIONS.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, case, func, select, union

from deadpixel.errors import DeadpixelError
from deadpixel.events import HUMAN_KINDS
from deadpixel.reports.analytics import iso
from deadpixel.reports.exports import cell
from deadpixel.store import segments as saved
from deadpixel.store.messages import campaign_id as find_campaign
from deadpixel.store.schema import clicks, messages, opens

CAMPAIGN_SEGMENTS = ("openers", "non-openers", "machine-only", "clickers")
AUDIENCE_SEGMENTS = ("inactive", "never-opened", "client", "device", "country")
DAY = 86_400.0
_FEW = 500  # up to this many addresses are named in the query (a page); more read the whole scope

DEFINITIONS = {
    "openers": (
        "recipients of {campaign} with a human open (verdict `human` or `proxy`: a proxy fetches when a"
        " person opens) or a human click on any of their sent messages"
    ),
    "non-openers": (
        "recipients of {campaign} with a delivered message (sent, not bounced hard) and neither a human open"
        " nor a human click: this includes those whose only opens are machines' (Apple's prefetch, scanners)"
    ),
    "machine-only": (
        "the non-openers of {campaign} whose message some machine fetched (a `prefetch` or `scanner` open),"
        " which raw open rates count as opened"
    ),
    "clickers": "recipients of {campaign} with a human click (verdict `human` or `proxy`) on a tracked link",
    "inactive": (
        "addresses first sent to more than {value} days ago, with a delivered message, and no human open or"
        " human click in the last {value} days (or never)"
    ),
    "never-opened": (
        "addresses with a delivered message that never had a human open or a human click on any message"
    ),
    "client": "addresses with a human or proxy open from the mail client {value!r} (any case)",
    "device": (
        "addresses with a human open on a {value!r} device (proxy opens are left out: a proxy hides the"
        " reader's device)"
    ),
    "country": (
        "addresses with a human open from the country {value!r} (proxy opens are left out: a proxy fetches"
        " from its own network, not where the reader is)"
    ),
}
# What a segment row carries for ``campaign send --segment``: the address; the rest of the original list's
# row (names, other columns) is never stored.
MERGE_FIELDS = ("email",)


class BadSegment(DeadpixelError, ValueError):
    """A segment definition that cannot be read, or names no saved segment."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One definition: ``campaign`` is None for the audience segments; ``value`` is their parameter."""

    who: str
    campaign: str | None = None
    value: str | None = None

    @property
    def spec(self) -> str:
        """The definition as one line, as ``parse`` reads it back."""
        if self.campaign is not None:
            return f"{self.campaign}:{self.who}"
        return f"@{self.who}" + (f":{self.value}" if self.value is not None else "")

    def definition(self) -> str:
        return DEFINITIONS[self.who].format(campaign=self.campaign, value=self.value)


def parse(spec: str) -> Segment:
    """``CAMPAIGN:WHO`` or ``@AUDIENCE[:VALUE]``; BadSegment saying what is possible otherwise."""
    text = spec.strip()
    if text.startswith("@"):
        who, _, value = text[1:].partition(":")
        return audience(who, value.strip() or None)
    name, _, who = text.rpartition(":")
    if not name or who not in CAMPAIGN_SEGMENTS:
        raise BadSegment(
            f"{spec!r} is not a segment: write CAMPAIGN:WHO (WHO one of {', '.join(CAMPAIGN_SEGMENTS)}),"
            " @inactive:DAYS, @never-opened, @client:NAME, @device:NAME or @country:CODE"
        )
    return Segment(who, campaign=name)


def audience(who: str, value: str | None = None) -> Segment:
    """An audience segment, its parameter checked: days a whole number from 1, names up to 64 characters."""
    if who not in AUDIENCE_SEGMENTS:
        raise BadSegment(f"no audience segment {who!r}: one of {', '.join(AUDIENCE_SEGMENTS)}")
    if who == "never-opened":
        if value is not None:
            raise BadSegment("@never-opened takes no value")
        return Segment(who)
    if not value or len(value) > 64:
        raise BadSegment(f"@{who} needs a value of 1 to 64 characters, e.g. @{who}:{_EXAMPLES[who]}")
    if who == "inactive" and not (value.isascii() and value.isdigit() and 1 <= int(value) <= 36_500):
        raise BadSegment(f"@inactive needs a number of days from 1 to 36500 (got {value!r})")
    return Segment(who, value=value.upper() if who == "country" else value)


_EXAMPLES = {"inactive": "90", "client": "Thunderbird", "device": "mobile", "country": "DE"}


def resolve(conn: Connection, spec_or_name: str) -> Segment:
    """A definition, or the name of a saved segment (evaluated now, like any definition)."""
    if ":" in spec_or_name or spec_or_name.startswith("@"):
        return parse(spec_or_name)
    found = saved.find(conn, spec_or_name)
    if found is None:
        raise BadSegment(f"no saved segment named {spec_or_name!r} (deadpixel segment list)")
    return parse(found.definition)


# --- the queries -----------------------------------------------------------------------------------------

m = messages.c
_ADDRESS = func.lower(m.recipient)


def _total(column: Any) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


def _delivered_messages() -> ColumnElement[Any]:
    return _total(case((m.bounce == "hard", 0), else_=1))


def _per_address(where: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """One row per address among sent messages matching ``where``: the facts every segment is decided on."""
    return (
        select(
            _ADDRESS.label("email"),
            func.min(m.id).label("message_id"),
            func.count().label("messages"),
            func.min(func.coalesce(m.sent_at, m.created_at)).label("first_sent_at"),
            func.max(func.coalesce(m.sent_at, m.created_at)).label("last_sent_at"),
            _delivered_messages().label("delivered"),
            _total(m.human_open_count).label("human_opens"),
            _total(m.machine_open_count).label("machine_opens"),
            _total(m.human_click_count).label("human_clicks"),
            func.max(m.last_open_at).label("last_open_at"),
        )
        .where(m.status == "sent", m.recipient.is_not(None), *where)
        .group_by(_ADDRESS)
    )


def _conditions(segment: Segment, facts: Any, now: float) -> list[ColumnElement[bool]]:
    """The segment's test over one ``_per_address`` row (``facts`` is that query as a subquery's columns)."""
    human = facts.human_opens + facts.human_clicks > 0
    never = facts.human_opens + facts.human_clicks == 0
    delivered = facts.delivered > 0
    who = segment.who
    if who == "openers":
        return [human]
    if who == "clickers":
        return [facts.human_clicks > 0]
    if who == "non-openers" or who == "never-opened":
        return [delivered, never]
    if who == "machine-only":
        return [delivered, never, facts.machine_opens > 0]
    if who == "inactive":
        cutoff = now - int(segment.value or 0) * DAY
        return [delivered, facts.first_sent_at < cutoff, facts.email.not_in(_humans_since(cutoff))]
    return [facts.email.in_(_human_openers_by(who, segment.value or ""))]


def _humans_since(cutoff: float) -> Select[Any]:
    """Addresses with a human open or click at or after ``cutoff``: read through the events' time index."""
    seen = []
    for table in (opens, clicks):
        seen.append(
            select(_ADDRESS)
            .select_from(table.join(messages, m.id == table.c.message_id))
            .where(table.c.at >= cutoff, table.c.kind.in_(sorted(HUMAN_KINDS)))
        )
    return select(union(*seen).subquery().c[0])


def _human_openers_by(field: str, value: str) -> Select[Any]:
    """Addresses with a human open whose client, device or country is ``value``; the client also from a
    proxy's opens (a proxy tells the client: Gmail), device and country from a person's own opens only."""
    kinds = sorted(HUMAN_KINDS) if field == "client" else ["human"]
    column = opens.c[field]
    return (
        select(_ADDRESS)
        .select_from(opens.join(messages, m.id == opens.c.message_id))
        .where(opens.c.kind.in_(kinds), func.lower(column) == value.lower())
        .distinct()
    )


def _scope(conn: Connection, segment: Segment) -> list[ColumnElement[bool]]:
    if segment.campaign is None:
        return []
    cid = find_campaign(conn, segment.campaign)
    if cid is None:
        from deadpixel.reports.analytics import UnknownCampaign

        raise UnknownCampaign(segment.campaign)
    return [m.campaign_id == cid]


def _members_query(conn: Connection, segment: Segment, now: float) -> Select[Any]:
    """The segment's rows, in no particular order (sorting a whole segment is cheaper in Python)."""
    facts = _per_address(_scope(conn, segment)).subquery("facts")
    return select(facts).where(*_conditions(segment, facts.c, now))


def emails(conn: Connection, segment: Segment, now: float | None = None) -> list[str]:
    """Only the segment's addresses, sorted: what ``deadpixel segment`` prints and a campaign sends to."""
    return sorted(conn.execute(addresses(conn, segment, now)).scalars())


def addresses(conn: Connection, segment: Segment, now: float | None = None) -> Select[Any]:
    """The segment's lower-cased addresses as a query, to filter another list by (the dashboard's table)."""
    facts = _per_address(_scope(conn, segment)).subquery("facts")
    return select(facts.c.email).where(*_conditions(segment, facts.c, time.time() if now is None else now))


def count(conn: Connection, segment: Segment, now: float | None = None) -> int:
    query = _members_query(conn, segment, time.time() if now is None else now).subquery()
    return int(conn.execute(select(func.count()).select_from(query)).scalar_one())


def campaign_counts(conn: Connection, campaign: str) -> dict[str, int]:
    """How many recipients are in each of the campaign's segments, in one pass over its messages."""
    facts = _per_address(_scope(conn, Segment("openers", campaign))).subquery("facts")
    checks = [
        func.coalesce(func.sum(case((_all(_conditions(Segment(who, campaign), facts.c, 0)), 1), else_=0)), 0)
        for who in CAMPAIGN_SEGMENTS
    ]
    row = conn.execute(select(*checks).select_from(facts)).one()
    return {who: int(n) for who, n in zip(CAMPAIGN_SEGMENTS, row, strict=True)}


def _all(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    found = conditions[0]
    for condition in conditions[1:]:
        found = found & condition
    return found


def members(
    conn: Connection,
    segment: Segment,
    *,
    now: float | None = None,
    last_human_open: bool = True,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Every recipient in the segment, by address, with what is known of them (times as ISO 8601).

    ``last_human_open`` (the newest human or proxy open of the address's messages in scope) follows each
    opened message's chain of opens from its newest one; leave it out when only the addresses are wanted.
    """
    query = _members_query(conn, segment, time.time() if now is None else now)
    if limit is not None or offset:
        query = query.order_by(query.selected_columns.email).limit(limit).offset(offset)
    result = conn.execute(query)
    names = list(result.keys())
    rows = sorted((dict(zip(names, row, strict=True)) for row in result), key=lambda row: str(row["email"]))
    opened = {row["email"] for row in rows if row["human_opens"]}
    newest = _last_human_opens(conn, segment, opened) if last_human_open else {}
    for row in rows:
        row["delivered"] = int(row["delivered"])
        for name in ("human_opens", "machine_opens", "human_clicks", "messages"):
            row[name] = int(row[name])
        row["last_human_open"] = iso(newest.get(row["email"]))
        for name in ("first_sent_at", "last_sent_at", "last_open_at"):
            row[name] = iso(row[name])
    return rows


def _last_human_opens(conn: Connection, segment: Segment, wanted: set[str]) -> dict[str, float]:
    """Address -> time of its newest human or proxy open, among the messages in the segment's scope.

    One query: each opened message's chain of opens (deadpixel.store.chains) is followed from its newest
    open down to the first human or proxy one, one primary-key lookup a step; a person's open is usually the
    newest, so most chains take one step. A page's few addresses narrow the heads to theirs."""
    if not wanted:
        return {}
    o = opens.c
    heads = select(m.last_open_id.label("id"), _ADDRESS.label("email")).where(
        m.status == "sent", m.human_open_count > 0, m.last_open_id.is_not(None), *_scope(conn, segment)
    )
    if len(wanted) <= _FEW:
        heads = heads.where(_ADDRESS.in_(sorted(wanted)))
    walk = heads.cte("walk", recursive=True)
    machine = o.kind.is_(None) | o.kind.not_in(sorted(HUMAN_KINDS))
    step = (
        select(o.prev_id, walk.c.email)
        .join(walk, o.id == walk.c.id)
        .where(machine, o.prev_id < o.id)  # prev_id < id always; saying so ends a damaged chain
    )
    walk = walk.union_all(step)
    query = (
        select(walk.c.email, func.max(o.at))
        .join(opens, o.id == walk.c.id)
        .where(o.kind.in_(sorted(HUMAN_KINDS)))
        .group_by(walk.c.email)
    )
    return {email: float(at) for email, at in conn.execute(query) if email in wanted}


def campaign_overview(conn: Connection, campaign: str) -> list[dict[str, Any]]:
    """Each campaign segment with its count, definition and spec: what the API and the dashboard show."""
    counts = campaign_counts(conn, campaign)
    found = []
    for who in CAMPAIGN_SEGMENTS:
        segment = Segment(who, campaign)
        found.append(
            {"who": who, "spec": segment.spec, "count": counts[who], "definition": segment.definition()}
        )
    return found


def describe(segment: Segment) -> dict[str, Any]:
    return {"spec": segment.spec, "definition": segment.definition(), "merge_fields": list(MERGE_FIELDS)}


CSV_COLUMNS = (
    "email", "message_id", "messages", "first_sent_at", "last_sent_at", "delivered", "human_opens",
    "machine_opens", "human_clicks", "last_open_at", "last_human_open",
)  # fmt: skip


def csv_chunks(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    """``members``' rows as CSV, header first, 500 rows a chunk; formula-like cells defused."""
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(CSV_COLUMNS)
    for start in range(0, max(len(rows), 1), 500):
        for row in rows[start : start + 500]:
            out.writerow([cell(row[name]) for name in CSV_COLUMNS])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
