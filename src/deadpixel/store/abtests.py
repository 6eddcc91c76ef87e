"""A/B tests in the store: a test's settings and variants, the recipients waiting for the winner, and the
HTML each campaign and variant was sent with (stored once, for the click map).

The winner is written once (a conditional update), so two ``campaign winner --now`` at once, or the
background sender and a person, cannot pick different winners for the same rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.store.schema import ab_tests, ab_variants, ab_waiting, campaigns, sent_html


@dataclass(frozen=True, slots=True)
class VariantTemplates:
    label: str
    subject: str
    html: str


@dataclass(frozen=True, slots=True)
class AbTest:
    campaign_id: int
    metric: str
    test_share: float
    seed: str
    sender: str
    text_template: str | None
    variants: tuple[VariantTemplates, ...]
    utm_source: str | None = None  # the test's links were tagged with this utm_source: so are the rest's
    pick_after: float | None = None  # seconds after the test's send
    decide_at: float | None = None
    winner: str | None = None
    winner_at: float | None = None
    decide_note: str | None = None  # the server's last check: why it sent nothing, or what it sent
    decide_checks: int = 0


def load(conn: Connection, campaign_id: int) -> AbTest | None:
    row = conn.execute(select(ab_tests).where(ab_tests.c.campaign_id == campaign_id)).first()
    if row is None:
        return None
    v = ab_variants.c
    variants = tuple(
        VariantTemplates(label, subject, html)
        for label, subject, html in conn.execute(
            select(v.label, v.subject, v.html).where(v.campaign_id == campaign_id).order_by(v.label)
        )
    )
    return AbTest(
        campaign_id, row.metric, row.test_share, row.seed, row.sender, row.text_template, variants,
        row.utm_source, row.pick_after, row.decide_at, row.winner, row.winner_at, row.decide_note,
        row.decide_checks,
    )  # fmt: skip


def create(conn: Connection, test: AbTest) -> AbTest:
    """Store a new test; when the campaign already has one (a re-run), that one stands and is returned, so
    the split, the variants and the schedule stay as first sent."""
    existing = load(conn, test.campaign_id)
    if existing is not None:
        return existing
    try:
        with conn.begin_nested():
            conn.execute(
                insert(ab_tests).values(
                    campaign_id=test.campaign_id, metric=test.metric, test_share=test.test_share,
                    seed=test.seed, sender=test.sender, text_template=test.text_template,
                    utm_source=test.utm_source,
                    pick_after=test.pick_after, decide_at=test.decide_at, created_at=time.time(),
                )
            )  # fmt: skip
            conn.execute(
                insert(ab_variants),
                [
                    {"campaign_id": test.campaign_id, "label": v.label, "subject": v.subject, "html": v.html}
                    for v in test.variants
                ],
            )
    except IntegrityError:  # another run stored it meanwhile
        found = load(conn, test.campaign_id)
        assert found is not None
        return found
    return test


def choose_winner(conn: Connection, campaign_id: int, label: str) -> str:
    """Set the winner unless one was set before; return the one that stands."""
    conn.execute(
        update(ab_tests)
        .where(ab_tests.c.campaign_id == campaign_id, ab_tests.c.winner.is_(None))
        .values(winner=label, winner_at=time.time())
    )
    return str(
        conn.execute(select(ab_tests.c.winner).where(ab_tests.c.campaign_id == campaign_id)).scalar_one()
    )


def due_decisions(conn: Connection, now: float, limit: int = 10) -> list[tuple[int, str, float]]:
    """Tests whose check for a winner is due: (campaign id, its name, decide_at as read, for
    ``claim_decision``), the longest due first."""
    t = ab_tests.c
    query = (
        select(t.campaign_id, campaigns.c.name, t.decide_at)
        .join(campaigns, campaigns.c.id == t.campaign_id)
        .where(t.decide_at <= now)
        .order_by(t.decide_at)
        .limit(limit)
    )
    return [(int(cid), str(name), float(at)) for cid, name, at in conn.execute(query)]


def claim_decision(conn: Connection, campaign_id: int, seen: float, until: float) -> bool:
    """Take the due check of a test for this server until ``until``: one conditional update on the
    ``decide_at`` it read, so of several servers asking at once exactly one gets it (a server that dies
    with it lets it come due again at ``until``)."""
    t = ab_tests.c
    result = conn.execute(
        update(ab_tests).where(t.campaign_id == campaign_id, t.decide_at == seen).values(decide_at=until)
    )
    return bool(result.rowcount)


def record_check(
    conn: Connection, campaign_id: int, note: str, next_at: float | None, *, counted: bool = True
) -> None:
    """Note what a check found (or sent) and when the next is due (None: no more checks)."""
    t = ab_tests.c
    values: dict[str, object] = {"decide_note": note[:2000], "decide_at": next_at}
    if counted:
        values["decide_checks"] = t.decide_checks + 1
    conn.execute(update(ab_tests).where(t.campaign_id == campaign_id).values(**values))


@dataclass(frozen=True, slots=True)
class Waiting:
    address: str  # lower-cased
    line: int
    email: str  # as the list wrote it
    values: dict[str, str]  # the row's columns, for the templates
    track: bool


def hold(conn: Connection, campaign_id: int, rows: Sequence[Waiting]) -> None:
    """Keep these recipients for the winner; one already kept (a re-run) stays as it was."""
    if not rows:
        return
    w = ab_waiting.c
    keys = [r.address for r in rows]
    kept = set(
        conn.execute(select(w.address).where(w.campaign_id == campaign_id, w.address.in_(keys))).scalars()
    )
    fresh = {r.address: r for r in rows if r.address not in kept}  # the first row of an address wins
    if fresh:
        conn.execute(
            insert(ab_waiting),
            [
                {"campaign_id": campaign_id, "address": r.address, "line": r.line, "fields": _fields(r)}
                for r in fresh.values()
            ],
        )


def _fields(row: Waiting) -> str:
    return json.dumps({"email": row.email, "values": row.values, "track": row.track})


def waiting_page(
    conn: Connection, campaign_id: int, after: tuple[int, str] = (-1, ""), batch: int = 1000
) -> list[Waiting]:
    """The next ``batch`` recipients kept for the winner after (line, address) ``after``, in line order."""
    w = ab_waiting.c
    rows = conn.execute(
        select(w.address, w.line, w.fields)
        .where(w.campaign_id == campaign_id)
        .where((w.line > after[0]) | ((w.line == after[0]) & (w.address > after[1])))
        .order_by(w.line, w.address)
        .limit(batch)
    ).all()
    found = []
    for address, line, fields in rows:
        kept = json.loads(fields)
        found.append(Waiting(address, line, kept["email"], kept["values"], kept["track"]))
    return found


def count_waiting(conn: Connection, campaign_id: int) -> int:
    from sqlalchemy import func

    query = select(func.count()).select_from(ab_waiting).where(ab_waiting.c.campaign_id == campaign_id)
    return int(conn.execute(query).scalar_one())


def keep_html(conn: Connection, campaign_id: int, variant: str, message_id: str, html: str) -> bool:
    """Store the HTML a campaign (variant) was sent with, unless it is stored already; True if stored now."""
    s = sent_html.c
    found = conn.execute(
        select(s.message_id).where(s.campaign_id == campaign_id, s.variant == variant)
    ).first()
    if found is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                insert(sent_html).values(
                    campaign_id=campaign_id, variant=variant, message_id=message_id, html=html,
                    stored_at=time.time(),
                )
            )  # fmt: skip
    except IntegrityError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class SentHtml:
    variant: str  # '' outside a test
    message_id: str
    html: str


def kept_html(conn: Connection, campaign_id: int) -> list[SentHtml]:
    s = sent_html.c
    query = select(s.variant, s.message_id, s.html).where(s.campaign_id == campaign_id).order_by(s.variant)
    return [SentHtml(*row) for row in conn.execute(query)]
