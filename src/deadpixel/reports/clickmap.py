"""The click map's numbers: per kept HTML of a campaign (one per variant, ``deadpixel.store.abtests``), each
link number's human clicks and clickers among that copy's messages.

Links are keyed by their number, not their URL: every message of a campaign is composed from the same
template, so link N is the same place in each copy even when its URL carries per-recipient values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, select

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


def _clicks(conn: Connection, campaign_id: int) -> tuple[dict[str, dict[int, LinkClicks]], dict[str, int]]:
    """Per variant ('' for none): each link's human clicks and clickers (one pass over the campaign's human
    clicks), and the variant's clickers (from the message rows' counters, as unique_clicks counts them)."""
    c, m = clicks.c, messages.c
    variant = func.coalesce(m.variant, "")
    per_link = (
        select(variant, c.link, func.count(), func.count(func.distinct(c.message_id)))
        .select_from(clicks.join(messages, m.id == c.message_id))
        .where(m.campaign_id == campaign_id, c.kind == "human", c.link != HIDDEN_LINK)
        .group_by(variant, c.link)
    )
    links: dict[str, dict[int, LinkClicks]] = {}
    for label, n, h, u in conn.execute(per_link):
        links.setdefault(label, {})[int(n)] = LinkClicks(int(h), int(u))
    everyone = (
        select(variant, func.count())
        .where(m.campaign_id == campaign_id, m.human_click_count > 0)
        .group_by(variant)
    )
    return links, {label: int(n) for label, n in conn.execute(everyone)}


def latest_click(conn: Connection) -> int:
    """The newest click's id: what a cached click map is keyed by (an index's last entry, not a scan)."""
    return int(conn.execute(select(func.coalesce(func.max(clicks.c.id), 0))).scalar_one())


def click_map(conn: Connection, campaign: str) -> list[CopyClicks]:
    """Every kept copy of the campaign's HTML with its links' clicks (empty when none was kept)."""
    cid = _campaign_id(conn, campaign)
    kept = abtests.kept_html(conn, cid)
    if not kept:
        return []
    links, clickers = _clicks(conn, cid)
    return [CopyClicks(k.variant, k.html, links.get(k.variant, {}), clickers.get(k.variant, 0)) for k in kept]
