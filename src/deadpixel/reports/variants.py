"""An A/B test's standing as the report, the API and the dashboard show it: each variant's figures and the
model's statement (``deadpixel.reports.abtest``).

Only the test share counts: messages carry their variant's label, the winner's send to the rest carries none,
so the rest never changes the comparison it was chosen by.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, func, select

from deadpixel.reports import abtest
from deadpixel.reports.analytics import _campaign_id, iso, rate
from deadpixel.store import abtests
from deadpixel.store.schema import messages

DEFINITION = (
    "per variant of an A/B test, over its test share only: sent; human_opens, messages with a `human` or"
    " `proxy` open or a human click (Apple's prefetch and scanners never count); clicks, messages with a"
    " human click; and the probability that the leader's true rate is above each other's (Beta-Binomial"
    " model, uniform prior; decided at 95%)"
)


def counts(conn: Connection, campaign_id: int) -> dict[str, tuple[int, int, int]]:
    """Per variant label: (sent, human opens, clicks), from the message rows' counters."""
    m = messages.c
    clicked = m.human_click_count > 0
    query = (
        select(
            m.variant,
            func.count(),
            func.coalesce(func.sum(case(((m.human_open_count > 0) | clicked, 1), else_=0)), 0),
            func.coalesce(func.sum(case((clicked, 1), else_=0)), 0),
        )
        .where(m.campaign_id == campaign_id, m.status == "sent", m.variant.is_not(None))
        .group_by(m.variant)
    )
    return {label: (int(n), int(h), int(c)) for label, n, h, c in conn.execute(query)}


def ab_test(conn: Connection, campaign: str, metric: str | None = None) -> dict[str, Any] | None:
    """The campaign's A/B test and its standing by ``metric`` (default: the test's own); None if untested."""
    cid = _campaign_id(conn, campaign)
    test = abtests.load(conn, cid)
    if test is None:
        return None
    metric = metric or test.metric
    found = counts(conn, cid)
    variants = [abtest.Variant(v.label, *found.get(v.label, (0, 0, 0))) for v in test.variants]
    standing = abtest.standing(variants, metric)
    return {
        "metric": metric,
        "test_share": test.test_share,
        "variants": [
            {
                "label": v.label,
                "subject": next(t.subject for t in test.variants if t.label == v.label),
                "sent": v.sent,
                "human_opens": v.human_opens,
                "clicks": v.clicks,
                "human_open_rate": rate(v.human_opens, v.sent),
                "click_rate": rate(v.clicks, v.sent),
            }
            for v in variants
        ],
        "leader": standing.leader,
        "probability": standing.probability,
        "beats": standing.beats,
        "status": standing.status,
        "decided": standing.decided,
        "statement": standing.statement,
        "winner": test.winner,
        "winner_chosen_at": iso(test.winner_at),
        "waiting": abtests.count_waiting(conn, cid),
        "pick_winner_after_seconds": test.pick_after,
        "pick_winner_at": iso(test.decide_at),
        "last_check": test.decide_note,  # the server's last look: why no winner went, or what it sent
        "definition": DEFINITION,
    }
