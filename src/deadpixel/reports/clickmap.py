"""The click map's numbers: per kept HTML of a campaign (one per variant, ``deadpixel.store.abtests``), each
link number's human clicks and clickers among that copy's messages.

Links are keyed by their number, not their URL: every message of a campaign is composed from the same
template, so link N is the same place in each copy even when its URL carries per-recipient values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select

from deadpixel.events import HIDDEN_LINK
from deadpixel.reports.analytics import _campaign_id
from deadpixel.store import abtests
from deadpixel.store.schema import clicks, messages


@dataclass(frozen=True, slots=True)
class LinkClicks:
    human_clicks: int
    clickers: int  # messages with a human click on this link


@dataclass(frozen=True, slots=True)
class CopyClicks:
    """One kept copy of the campaign's HTML and the clicks on its links."""

    variant: str  # '' outside a test
    html: str
    links: dict[int, LinkClicks]
    clickers: int  # messages of this copy with a human click on any link


def _clicks_of(conn: Connection, campaign_id: int, variant: str) -> tuple[dict[int, LinkClicks], int]:
    c, m = clicks.c, messages.c
    mine = m.variant.is_(None) if variant == "" else m.variant == variant
    human = c.kind == "human"
    base = (
        select()
        .select_from(clicks.join(messages, m.id == c.message_id))
        .where(m.campaign_id == campaign_id, mine, c.link != HIDDEN_LINK)
    )
    per_link = base.add_columns(
        c.link,
        func.coalesce(func.sum(case((human, 1), else_=0)), 0),
        func.count(func.distinct(case((human, c.message_id)))),
    ).group_by(c.link)
    links = {int(n): LinkClicks(int(h), int(u)) for n, h, u in conn.execute(per_link) if h}
    everyone = base.add_columns(func.count(func.distinct(c.message_id))).where(human)
    return links, int(conn.execute(everyone).scalar_one())


def click_map(conn: Connection, campaign: str) -> list[CopyClicks]:
    """Every kept copy of the campaign's HTML with its links' clicks (empty when none was kept)."""
    cid = _campaign_id(conn, campaign)
    found = []
    for kept in abtests.kept_html(conn, cid):
        links, clickers = _clicks_of(conn, cid, kept.variant)
        found.append(CopyClicks(kept.variant, kept.html, links, clickers))
    return found
