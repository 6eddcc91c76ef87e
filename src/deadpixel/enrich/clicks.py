"""Verdicts for clicks: a rule set of their own beside the open rules (``classify.py``), each with a reason.

The open rules are wrong for clicks both ways. A reader's click never comes from Google's image proxy
or Apple's prefetch, while their opens do; Outlook.com's opens come from Microsoft's network, and so do
Safe Links' clicks, while a reader's own click, redirected by Safe Links, comes from home. Gateways follow
every link of a message seconds after delivery, with browser user agents, from addresses no list knows:
two rules look at a click's neighbours instead of the click alone, the burst (several links of one
message followed within seconds from one address) and the hidden link each tracked message carries
(``mail.compose``), which no person can see or click.

Nothing here reads a database: the neighbours (earlier clicks of the same messages, when a person first opened
each) are looked up by the caller (the click writer, ``reclassify``) and passed in.
"""

from __future__ import annotations

import bisect
import logging
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from deadpixel.enrich.classify import (
    SUSPECT_NETWORK_SECONDS,
    TOO_FAST_SECONDS,
    Address,
    Enricher,
    Enrichment,
    Verdict,
    _fmt_seconds,
    _owner_text,
    _seconds,
    enrichment_for,
    human_reason,
    prefetch_word,
)
from deadpixel.enrich.networks import format_ip
from deadpixel.enrich.privacy import redacted, scrubbed, stored_ip
from deadpixel.enrich.useragent import UserAgentFacts, analyse_user_agent
from deadpixel.events import HIDDEN_LINK, HUMAN_KINDS, ClickEvent, StoredClick

log = logging.getLogger(__name__)
ENRICHED_FIELDS: tuple[str, ...] = Enrichment._fields

BURST_LINKS = 3
"""Different links of one message followed from one address within ``BURST_SECONDS``: no reader clicks so
many so fast (CustomerMinds counts "every link, in mails with 3 or more"). Two-link bursts are left to the
hidden link, which gateways follow with the rest."""
BURST_SECONDS = 5.0
HIDDEN_WINDOW = 60.0
"""Seconds either side of a hidden-link click in which the same address's clicks of that message are the
same machine's (Mautic discards ±10 s; gateways take longer over messages with many links)."""
SETTLE_SECONDS = 10.0
"""How long a person's click waits before its webhook is due: gateways follow a message's links within
seconds, so a burst or the hidden link that shows the click to be theirs has usually come by then."""
NEIGHBOUR_WINDOW = max(HIDDEN_WINDOW, BURST_SECONDS)
"""How far apart two clicks can be and still change each other's verdict: how far back a writer looks."""

# What a network owner's group (``data/asn-owners.csv``) means, per kind of event. For opens, Microsoft,
# Google and Yahoo carry real readers' image loads (Outlook.com's, Gmail's and Yahoo's proxies) and Apple's
# relays carry Mail Privacy Protection: the open rules let them decide only with a send time. For clicks
# none of them carries a person except Apple's relays (Safari with iCloud Private Relay): webmail and Safe
# Links send the reader's own browser to the link. A "datacentre" click is a machine's when it comes before
# any open by a person or within a minute of the send.
CLICK_NETWORK_ROLES: Mapping[str, str] = {
    "security": "datacentre",
    "microsoft": "datacentre",
    "google": "datacentre",
    "yahoo": "datacentre",
    "cloud": "datacentre",
    "apple": "person",
    "relay": "person",
}
# Listed ranges, per kind of event: documented scanner ranges are machines for both; Google's user-triggered
# fetchers fetch for a person (opens) but never are one (clicks); Apple's relay egress carries people.
CLICK_LISTED_MACHINES = frozenset({"Google user-triggered fetchers"})


@dataclass(frozen=True, slots=True)
class ClickContext:
    """What a click's neighbours tell: the caller's lookups, as the rules take them."""

    hidden: bool = False  # this click followed the message's hidden link
    near_hidden: float | None = None  # seconds to the nearest hidden-link click from the same address
    links_followed: int = 1  # different visible links of the message this address followed around this click
    within: float = 0.0  # seconds between the first and the last of those
    opened_before: bool | None = None  # a person opened the message before this click; None: unknown


NO_CONTEXT = ClickContext()


def _hidden_verdict(context: ClickContext) -> Verdict | None:
    """The rules that look at neighbours: the hidden link and the burst."""
    if context.hidden:
        return Verdict(
            "scanner", "followed the hidden link, which no person can see or click", "click-hidden"
        )
    gap = context.near_hidden
    if gap is not None and gap <= HIDDEN_WINDOW:
        reason = f"{_fmt_seconds(gap)} from this address following the message's hidden link"
        return Verdict("scanner", reason, "click-near-hidden")
    if context.links_followed >= BURST_LINKS and context.within <= BURST_SECONDS:
        reason = (
            f"{context.links_followed} links of the message followed within {_fmt_seconds(context.within)}"
            " from one address: no reader clicks that fast"
        )
        return Verdict("scanner", reason, "click-burst")
    return None


def classify_click(
    address: Address,
    facts: UserAgentFacts,
    method: str = "GET",
    purpose: str | None = None,
    seconds: float | None = None,
    context: ClickContext = NO_CONTEXT,
) -> Verdict:
    """The verdict on one click; ``seconds`` since the send, None when unknown. The first rule that applies
    decides (docs/enrichment.md, "Clicks")."""
    ip, listed, owner = address.ip, address.listed, address.owner
    if ip is not None and address.mine is not None:
        return Verdict("self", f"from {format_ip(ip)}, one of your own addresses ({address.mine})", "self-ip")
    method = (method or "GET").strip().upper()[:16]
    if method != "GET":
        shown = "HEAD request" if method == "HEAD" else f"{method!r} request"
        return Verdict("scanner", f"{shown}: a link checker, not a person following a link", "click-method")
    if purpose:
        return Verdict("prefetch", f"request says it is a {purpose} (Purpose header)", "click-prefetch")
    neighbours = _hidden_verdict(context)
    if neighbours is not None:
        return neighbours
    if listed is not None and (listed.kind == "scanner" or listed.owner in CLICK_LISTED_MACHINES):
        return Verdict("scanner", f"from {listed.owner} network {listed.cidr}", "click-network-listed")
    machine = facts.machine
    if machine is not None:
        if machine.kind == "scanner":
            return Verdict("scanner", machine.reason, machine.rule)
        reason = f"{machine.reason}: it loads images, it never follows a link for a person"
        return Verdict("scanner", reason, "click-ua-fetcher")
    if seconds is not None and seconds < TOO_FAST_SECONDS:
        reason = f"{_fmt_seconds(seconds)} after send: faster than anyone reads mail"
        return Verdict("scanner", reason, "click-too-fast")
    role = CLICK_NETWORK_ROLES.get(owner.group) if owner is not None else None
    if role == "datacentre":
        source = _owner_text(address.place, owner)
        if seconds is not None and seconds < SUSPECT_NETWORK_SECONDS:
            reason = f"{_fmt_seconds(seconds)} after send from {source}, a data centre"
            return Verdict("scanner", reason, "click-datacentre-fast")
        if context.opened_before is False:
            reason = f"from {source}, a data centre, before any person opened the message"
            return Verdict("scanner", reason, "click-datacentre-unopened")
    return Verdict("human", human_reason(facts), "human")


class ClickJudge:
    """The click rules over an ``Enricher``'s address facts: one click's ``Enrichment``."""

    def __init__(self, enricher: Enricher) -> None:
        self.enricher = enricher

    def enrich_click(
        self,
        ip: str | None,
        user_agent: str | None,
        method: str = "GET",
        purpose: str | None = None,
        seconds_after_send: float | None = None,
        context: ClickContext = NO_CONTEXT,
    ) -> Enrichment:
        address = self.enricher.address(ip)
        facts = analyse_user_agent(user_agent)
        verdict = classify_click(address, facts, method, purpose, _seconds(seconds_after_send), context)
        return enrichment_for(address.place, facts, verdict)


class Seen(NamedTuple):
    """A click as the neighbour rules see it: which message and link, when, and from which address (as
    stored, so that new clicks and stored ones compare alike)."""

    message_id: str
    link: int
    at: float
    ip: str | None


def click_contexts(
    clicks: Sequence[Seen], opened_at: Mapping[str, float] | None = None
) -> list[ClickContext]:
    """Each click's context from all the others: windows reach both ways, so a later hidden-link click or a
    later part of a burst counts as much as an earlier one. ``opened_at``: when a person first opened each
    message (a message left out was not opened; None: not known)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, click in enumerate(clicks):
        if click.ip is not None:
            groups.setdefault((click.message_id, click.ip), []).append(i)
    contexts = [
        ClickContext(
            hidden=click.link == HIDDEN_LINK,
            opened_before=None if opened_at is None else _opened_before(opened_at, click),
        )
        for click in clicks
    ]
    for members in groups.values():
        if len(members) == 1:
            continue
        members.sort(key=lambda i: clicks[i].at)
        visible = [i for i in members if clicks[i].link != HIDDEN_LINK]
        hidden_times = [clicks[i].at for i in members if clicks[i].link == HIDDEN_LINK]
        bursts = _bursts([clicks[i] for i in visible])
        for position, i in enumerate(visible):
            near = _nearest(hidden_times, clicks[i].at) if hidden_times else None
            links, span = bursts.get(position, (1, 0.0))
            contexts[i] = ClickContext(False, near, links, span, contexts[i].opened_before)
    return contexts


def _bursts(visible: Sequence[Seen]) -> dict[int, tuple[int, float]]:
    """Which of one address's clicks on one message (in time order) lie in a span of ``BURST_SECONDS`` that
    holds ``BURST_LINKS`` different links or more: their positions, with that span's links and seconds.
    One pass with a sliding window, each click marked once: a flood costs no more than its length."""
    found: dict[int, tuple[int, float]] = {}
    counts: Counter[int] = Counter()
    hi = 0
    marked = -1
    for lo, first in enumerate(visible):
        while hi < len(visible) and visible[hi].at - first.at <= BURST_SECONDS:
            counts[visible[hi].link] += 1
            hi += 1
        if len(counts) >= BURST_LINKS:
            figures = (len(counts), visible[hi - 1].at - first.at)
            for position in range(max(lo, marked + 1), hi):
                found[position] = figures
            marked = hi - 1
        counts[first.link] -= 1
        if not counts[first.link]:
            del counts[first.link]
    return found


def _opened_before(opened_at: Mapping[str, float], click: Seen) -> bool:
    first = opened_at.get(click.message_id)
    return first is not None and first <= click.at


def _nearest(times: list[float], at: float) -> float:
    i = bisect.bisect_left(times, at)
    return min(abs(times[j] - at) for j in (i - 1, i) if 0 <= j < len(times))


class ClickClassifier:
    """Builds stored click rows, and the earlier clicks whose verdict the new ones change. Without an
    enricher (``DEADPIXEL_ENRICHMENT=false``) clicks stay unclassified."""

    window = NEIGHBOUR_WINDOW

    def __init__(
        self, enricher: Enricher | None, ip_mode: str = "truncate", settle: float = SETTLE_SECONDS
    ) -> None:
        self.enricher = enricher
        self.settle = settle
        self.judge = ClickJudge(enricher) if enricher is not None else None
        self.ip_mode = ip_mode

    def values(self, event: ClickEvent, sent_at: float | None, context: ClickContext) -> tuple[Any, ...]:
        """The enriched columns, in ``ENRICHED_FIELDS`` order."""
        if self.judge is None:
            return (None,) * len(ENRICHED_FIELDS)
        try:
            seconds = event.at - sent_at if sent_at is not None else None
            purpose = prefetch_word(event.purpose)
            return self.judge.enrich_click(
                event.ip, event.user_agent, event.method, purpose, seconds, context
            )
        except Exception:  # a rule bug must never cost a click: store it unclassified
            kept = redacted(event.as_open(), self.ip_mode)
            trace = scrubbed(traceback.format_exc(), [(event.ip, kept.ip)])
            log.error("click enrichment failed for %r\n%s", kept, trace.rstrip())
            return (None,) * len(ENRICHED_FIELDS)

    def addresses(self, events: Sequence[ClickEvent]) -> set[str]:
        """The events' addresses as they are kept: only earlier clicks from these are neighbours."""
        if self.judge is None:
            return set()
        kept = (stored_ip(event.ip, self.ip_mode) for event in events)
        return {ip for ip in kept if ip is not None}

    def click_rows(
        self,
        events: Sequence[ClickEvent],
        sent_at: Mapping[str, float],
        earlier: Sequence[StoredClick] = (),
        opened_at: Mapping[str, float] | None = None,
    ) -> tuple[list[dict[str, Any]], list[StoredClick]]:
        """Rows for ``events`` (addresses as kept), and those of the ``earlier`` stored clicks that the new
        ones show to be a machine's, with their new verdict."""
        kept_ips = [stored_ip(event.ip, self.ip_mode) for event in events]
        seen = [Seen(e.message_id, e.link, e.at, ip) for e, ip in zip(events, kept_ips, strict=True)]
        seen.extend(Seen(c.message_id, c.link, c.at, c.ip) for c in earlier)
        contexts = click_contexts(seen, opened_at)
        rows = []
        for event, ip, context in zip(events, kept_ips, contexts[: len(events)], strict=True):
            values = self.values(event, sent_at.get(event.message_id), context)
            row = dict(zip(ENRICHED_FIELDS, values, strict=True))
            row.update(message_id=event.message_id, link=event.link, at=event.at, ip=ip,
                       user_agent=event.user_agent, method=event.method, purpose=event.purpose)  # fmt: skip
            rows.append(row)
        changed = relabelled(earlier, contexts[len(events) :]) if self.judge is not None else []
        return rows, changed


def relabelled(clicks: Iterable[StoredClick], contexts: Iterable[ClickContext]) -> list[StoredClick]:
    """Stored clicks counted as a person's that their neighbours now show to be a machine's."""
    changed = []
    for click, context in zip(clicks, contexts, strict=True):
        if click.kind not in HUMAN_KINDS:
            continue
        verdict = _hidden_verdict(context)
        if verdict is not None:
            reason = f"{verdict.reason} (was: {click.reason})" if click.reason else verdict.reason
            changed.append(click._replace(kind=verdict.kind, reason=reason, rule=verdict.rule))
    return changed
