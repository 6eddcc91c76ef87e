"""The click rules one by one, each with its reason; the neighbours' contexts; relabelling earlier clicks with
counters, and pending webhooks, kept right; reclassify; the hidden link's placement in any HTML."""

from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from deadpixel.config import Settings
from deadpixel.enrich import Enricher, GeoLookup
from deadpixel.enrich.clicks import (
    BURST_LINKS,
    BURST_SECONDS,
    HIDDEN_WINDOW,
    ClickClassifier,
    ClickContext,
    ClickJudge,
    Seen,
    click_contexts,
)
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import HIDDEN_LINK, ClickEvent, OpenEvent
from deadpixel.hooks import registry
from deadpixel.hooks.guard import Guard
from deadpixel.mail.compose import HIDDEN_LINK_TEMPLATE, track_html
from deadpixel.reclassify import reclassify
from deadpixel.store import migrate
from deadpixel.store.clicks import write_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.events import CLICK, OPEN
from deadpixel.store.messages import create_message
from deadpixel.store.schema import clicks, messages, webhook_deliveries
from deadpixel.store.writes import write_opens

from .helpers import deadpixel

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
HOME = "81.2.69.142"  # a residential address in GB
UNKNOWN_HOST = "37.120.160.77"  # a hosting company no list names
AZURE = "20.72.100.79"  # Microsoft's network: Defender's detonation (laravel-passwordless-login #79)
EOP = "40.107.3.9"  # a documented Microsoft EOP range
SELF = "203.0.113.7"


@pytest.fixture(scope="module")
def judge() -> ClickJudge:
    return ClickJudge(Enricher(GeoLookup(), self_ips=["203.0.113.0/24"]))


def verdict(
    judge: ClickJudge, ip: str | None = HOME, ua: str | None = CHROME, **given: Any
) -> tuple[str, str, str]:
    method = given.pop("method", "GET")
    purpose = given.pop("purpose", None)
    seconds = given.pop("seconds", 3600.0)
    found = judge.enrich_click(ip, ua, method, purpose, seconds, ClickContext(**given))
    return found.kind, found.rule, found.reason


def test_a_readers_click_from_home_is_human_even_before_any_open(judge: ClickJudge) -> None:
    """Images are often blocked: a click with no open before it, from a home address, is a person's."""
    assert verdict(judge, opened_before=False)[:2] == ("human", "human")
    assert verdict(judge, opened_before=True)[:2] == ("human", "human")
    assert verdict(judge, seconds=None)[:2] == ("human", "human")


def test_the_senders_own_click_is_self(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, ip=SELF, hidden=True)
    assert (kind, rule) == ("self", "self-ip") and "one of your own addresses" in reason


def test_head_requests_are_link_checkers(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, method="HEAD")
    assert (kind, rule) == ("scanner", "click-method") and reason.startswith("HEAD request")


def test_prefetch_hints_are_prefetches(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, purpose="prefetch")
    assert (kind, rule) == ("prefetch", "click-prefetch") and "Purpose header" in reason


def test_following_the_hidden_link_is_a_machine(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, hidden=True)
    assert (kind, rule) == ("scanner", "click-hidden")
    assert reason == "followed the hidden link, which no person can see or click"


def test_a_click_near_the_hidden_link_from_the_same_address_is_a_machine(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, near_hidden=0.4)
    assert (kind, rule) == ("scanner", "click-near-hidden")
    assert reason == "0.4 s from this address following the message's hidden link"
    assert verdict(judge, near_hidden=HIDDEN_WINDOW + 1)[0] == "human"


def test_a_burst_of_links_is_a_machine(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, links_followed=4, within=0.8)
    assert (kind, rule) == ("scanner", "click-burst")
    assert (
        reason == "4 links of the message followed within 0.8 s from one address: no reader clicks that fast"
    )
    assert verdict(judge, links_followed=BURST_LINKS - 1, within=0.5)[0] == "human"  # two tabs opened fast
    assert verdict(judge, links_followed=BURST_LINKS, within=BURST_SECONDS + 1)[0] == "human"


def test_listed_scanner_ranges_are_machines(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, ip=EOP)
    assert (kind, rule) == ("scanner", "click-network-listed")
    assert reason == "from Microsoft EOP network 40.107.0.0/16"


def test_an_image_proxy_never_clicks(judge: ClickJudge) -> None:
    """For opens GoogleImageProxy is a person reading; for clicks it cannot be one."""
    kind, rule, reason = verdict(judge, ip=None, ua=GMAIL_PROXY)
    assert (kind, rule) == ("scanner", "click-ua-fetcher")
    assert "Gmail image proxy" in reason and "never follows a link" in reason
    opened = judge.enricher.enrich(ip=None, user_agent=GMAIL_PROXY, seconds_after_send=3600)
    assert opened.kind == "proxy"  # the open rules are unchanged


def test_scanner_user_agents_are_machines(judge: ClickJudge) -> None:
    kind, rule, _ = verdict(judge, ua="python-requests/2.32.3")
    assert kind == "scanner" and rule.startswith("ua-")
    assert verdict(judge, ua=None)[:2] == ("scanner", "ua-missing")


def test_a_click_right_after_the_send_is_a_machine(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, seconds=0.7)
    assert (kind, rule) == ("scanner", "click-too-fast") and reason.startswith("0.7 s after send")


def test_a_data_centre_click_before_any_open_or_soon_after_the_send_is_a_machine(judge: ClickJudge) -> None:
    kind, rule, reason = verdict(judge, ip=AZURE, opened_before=False)
    assert (kind, rule) == ("scanner", "click-datacentre-unopened")
    assert reason.endswith("(Microsoft Corporation), a data centre, before any person opened the message")
    kind, rule, reason = verdict(judge, ip=AZURE, seconds=12, opened_before=True)
    assert (kind, rule) == ("scanner", "click-datacentre-fast") and reason.startswith(
        "12 s after send from Microsoft"
    )
    # Opened by a person first and well after the send: a person on a cloud desktop.
    assert verdict(judge, ip=AZURE, opened_before=True)[0] == "human"
    assert verdict(judge, ip=AZURE, opened_before=None)[0] == "human"  # not known: no guess


def test_network_roles_differ_per_event_kind(judge: ClickJudge) -> None:
    """Microsoft's network carries Outlook.com's real opens; a click from it before an open is Safe Links."""
    opened = judge.enricher.enrich(ip=AZURE, user_agent=CHROME, seconds_after_send=3600)
    clicked = judge.enrich_click(AZURE, CHROME, "GET", None, 3600, ClickContext(opened_before=False))
    assert (opened.kind, clicked.kind) == ("human", "scanner")


def seen(link: int, at: float, ip: str | None = "198.51.100.1", message: str = "m1") -> Seen:
    return Seen(message, link, at, ip)


def test_contexts_reach_both_ways_and_stay_per_address_and_message() -> None:
    clicks_seen = [
        seen(0, 100.0),
        seen(1, 100.3),
        seen(2, 100.6),
        seen(HIDDEN_LINK, 130.0),
        seen(0, 100.2, ip="81.2.69.142"),  # a person elsewhere at the same time
        seen(1, 100.4, message="m2"),  # the same address on another message
        seen(0, 100.5, ip=None),  # no address kept: no neighbours
    ]
    contexts = click_contexts(clicks_seen, {"m1": 50.0})
    first = contexts[0]
    assert (first.links_followed, round(first.within, 1), first.near_hidden) == (3, 0.6, 30.0)
    assert contexts[3].hidden and contexts[3].near_hidden is None
    assert contexts[4] == ClickContext(opened_before=True)
    assert contexts[5] == ClickContext(opened_before=False)
    assert contexts[6] == ClickContext(opened_before=True)
    assert click_contexts([seen(0, 1.0)])[0].opened_before is None  # nothing known about opens


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 30, allow_nan=False), st.integers(0, 4) | st.just(HIDDEN_LINK)), max_size=25
    )
)
def test_bursts_are_exactly_the_spans_with_enough_links(events: list[tuple[float, int]]) -> None:
    """Against the definition: a click is in a burst when some span of BURST_SECONDS holding it (one may
    start at a click) holds BURST_LINKS different visible links."""
    contexts = click_contexts([seen(link, at) for at, link in events])
    visible = [(at, link) for at, link in events if link != HIDDEN_LINK]
    for (at, link), context in zip(events, contexts, strict=True):
        if link == HIDDEN_LINK:
            assert context.hidden
            continue
        expected = any(
            start <= at <= start + BURST_SECONDS
            and len({x for t, x in visible if start <= t <= start + BURST_SECONDS}) >= BURST_LINKS
            for start, _ in visible
        )
        burst = context.links_followed >= BURST_LINKS and context.within <= BURST_SECONDS
        assert burst == expected


def test_a_flood_from_one_address_costs_its_length() -> None:
    flood = [seen(n % 7, n / 1000) for n in range(20_000)]
    started = time.perf_counter()
    contexts = click_contexts(flood)
    assert time.perf_counter() - started < 2.0
    assert all(c.links_followed == 7 for c in contexts)


# --- the writer: relabelling earlier clicks -----------------------------------------------------------------


def counts_match_events(conn: Any, message_id: str) -> tuple[int, int]:
    """The message's click counters, after checking them against a GROUP BY over its clicks."""
    c = clicks.c
    grouped = dict(
        conn.execute(select(c.kind, func.count()).where(c.message_id == message_id).group_by(c.kind)).all()
    )
    row = conn.execute(select(messages).where(messages.c.id == message_id)).one()
    human = grouped.get("human", 0) + grouped.get("proxy", 0)
    machine = grouped.get("scanner", 0) + grouped.get("prefetch", 0)
    assert (row.click_count, row.human_click_count, row.machine_click_count) == (
        sum(grouped.values()),
        human,
        machine,
    )
    return human, machine


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Any:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def test_a_later_hidden_link_click_relabels_earlier_clicks_and_their_webhooks(store: Any) -> None:
    classifier = OpenClassifier(Enricher(GeoLookup()), "truncate")
    now = time.time()
    with store.begin() as conn:
        mid = create_message(conn, recipient="a@example.com", sent_at=now - 120)
        registry.add_webhook(conn, "https://hooks.example/in", "click", Guard.allowing("0.0.0.0/0"))
    with store.begin() as conn:  # the gateway's first two clicks: alone, they look like a person's
        write_clicks(conn, [ClickEvent(mid, 0, now, UNKNOWN_HOST, CHROME, "GET")], classifier.clicks)
        write_clicks(conn, [ClickEvent(mid, 1, now + 0.3, UNKNOWN_HOST, CHROME, "GET")], classifier.clicks)
        assert counts_match_events(conn, mid) == (2, 0)
    with store.begin() as conn:  # a person, from home, a little later
        write_clicks(conn, [ClickEvent(mid, 1, now + 20, HOME, CHROME, "GET")], classifier.clicks)
    with store.begin() as conn:  # then the gateway follows the hidden link
        write_clicks(
            conn, [ClickEvent(mid, HIDDEN_LINK, now + 0.6, UNKNOWN_HOST, CHROME, "GET")], classifier.clicks
        )
        assert counts_match_events(conn, mid) == (1, 3)
        rows = conn.execute(select(clicks).where(clicks.c.message_id == mid).order_by(clicks.c.at)).all()
        assert [(r.link, r.kind, r.rule) for r in rows] == [
            (0, "scanner", "click-near-hidden"),
            (1, "scanner", "click-near-hidden"),
            (HIDDEN_LINK, "scanner", "click-hidden"),
            (1, "human", "human"),
        ]
        assert rows[0].reason.startswith("0.6 s from this address following the message's hidden link (was: ")
        payloads = [json.loads(p) for p in conn.execute(select(webhook_deliveries.c.payload)).scalars()]
        assert sorted((p["link"], p["kind"]) for p in payloads) == [
            (0, "scanner"), (1, "human"), (1, "scanner"), (HIDDEN_LINK, "scanner")
        ]  # fmt: skip
        due = dict(
            conn.execute(select(webhook_deliveries.c.payload, webhook_deliveries.c.next_attempt_at)).all()
        )
        held = [at for payload, at in due.items() if json.loads(payload)["link"] == HIDDEN_LINK]
        assert held and held[0] <= time.time()  # a machine's click is not held back
    with store.begin() as conn:  # reclassify reaches the same verdicts from history
        assert reclassify(conn, classifier, CLICK) == 4
        again = conn.execute(select(clicks.c.rule).where(clicks.c.message_id == mid).order_by(clicks.c.at))
        assert list(again.scalars()) == ["click-near-hidden", "click-near-hidden", "click-hidden", "human"]
        assert counts_match_events(conn, mid) == (1, 3)


def test_a_burst_in_one_batch_and_the_open_before_it(store: Any) -> None:
    classifier = OpenClassifier(Enricher(GeoLookup()), "full")
    now = time.time()
    with store.begin() as conn:
        burst = create_message(conn, recipient="b@example.com", sent_at=now - 600)
        opened = create_message(conn, recipient="c@example.com", sent_at=now - 600)
    with store.begin() as conn:
        write_opens(conn, [OpenEvent(opened, now - 300, HOME, CHROME, "GET")], classifier)
    with store.begin() as conn:
        events = [ClickEvent(burst, n, now + n / 10, UNKNOWN_HOST, CHROME, "GET") for n in range(4)]
        events.append(ClickEvent(opened, 0, now, AZURE, CHROME, "GET"))  # a person on a cloud desktop
        events.append(ClickEvent(burst, 2, now, AZURE, CHROME, "GET"))  # Safe Links, no open before
        write_clicks(conn, events, classifier.clicks)
        assert counts_match_events(conn, burst) == (0, 5)
        assert counts_match_events(conn, opened) == (1, 0)
        rules = conn.execute(select(clicks.c.ip, clicks.c.rule).where(clicks.c.message_id == burst)).all()
        assert sorted(set(rules)) == [(AZURE, "click-datacentre-unopened"), (UNKNOWN_HOST, "click-burst")]
        assert reclassify(conn, classifier, OPEN) == 1
        reclassify(conn, classifier, CLICK)
        assert counts_match_events(conn, burst) == (0, 5)
        assert counts_match_events(conn, opened) == (1, 0)


def test_without_enrichment_clicks_stay_unclassified(store: Any) -> None:
    with store.begin() as conn:
        mid = create_message(conn, recipient="d@example.com", sent_at=time.time())
        events = [ClickEvent(mid, HIDDEN_LINK, time.time(), UNKNOWN_HOST, CHROME, "GET")]
        write_clicks(conn, events, ClickClassifier(None))
        assert conn.execute(select(clicks.c.kind)).scalars().all() == [None]


# --- the command ------------------------------------------------------------------------------------------


def test_classify_explains_a_click(settings: Settings) -> None:
    burst = deadpixel("classify", "--click", "--user-agent", CHROME, "--ip", UNKNOWN_HOST,
                      "--links-followed", "5", "--within", "1.5", "--json", check=True)  # fmt: skip
    found = json.loads(burst.stdout)
    assert (found["kind"], found["rule"]) == ("scanner", "click-burst")
    hidden = deadpixel("classify", "--click", "--hidden-link", "--user-agent", CHROME, check=True)
    assert hidden.stdout.startswith("scanner: followed the hidden link")
    unopened = deadpixel("classify", "--click", "--not-opened-before", "--user-agent", CHROME, "--ip", AZURE)
    assert unopened.stdout.startswith("scanner: from Microsoft network")
    assert deadpixel("classify", "--click", "--user-agent", CHROME, "--ip", HOME).stdout.startswith("human:")
    as_open = deadpixel("classify", "--user-agent", CHROME, "--ip", AZURE, "--seconds-after-send", "600")
    assert as_open.stdout.startswith("human:")
    wrong = deadpixel("classify", "--user-agent", CHROME, "--links-followed", "3")
    assert wrong.returncode == 2 and "need --click" in wrong.stderr
    bad = deadpixel("classify", "--click", "--user-agent", CHROME, "--links-followed", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- the hidden link in any HTML ----------------------------------------------------------------------------

HIDDEN = "https://t.example/c/HIDDEN"


class _Anchors(HTMLParser):
    """Where a browser's tokenizer finds anchors: the hidden one must be a real tag, never text or comment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hidden = 0
        self.in_body_at_hidden: bool | None = None
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self._body = True
        if tag == "a" and dict(attrs).get("href") == HIDDEN:
            self.hidden += 1
            self.in_body_at_hidden = self._body


_TAGS = st.sampled_from(["p", "div", "span", "table", "td", "b", "center", "font"])
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<&"), max_size=12)


@st.composite
def _fragment(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["text", "link", "element", "comment", "conditional", "entity"]))
    if kind == "text":
        return draw(_TEXT)
    if kind == "entity":
        return draw(st.sampled_from(["&amp;", "&nbsp;", "&lt;a href=x&gt;", "&#60;"]))
    if kind == "link":
        path = draw(st.text(alphabet="abc/?=&%", max_size=8)).replace("&", "&amp;")
        return f'<a href="https://site.example/{path}">{draw(_TEXT)}</a>'
    if kind == "comment":
        return f'<!-- {draw(_TEXT).replace("-", "")} <a href="https://x.example/">x</a> -->'
    if kind == "conditional":
        return '<!--[if mso]><a href="https://mso.example/">o</a><![endif]-->'
    if depth > 2:
        return draw(_TEXT)
    tag = draw(_TAGS)
    inner = "".join(draw(st.lists(_fragment(depth + 1), max_size=3)))
    return f"<{tag}>{inner}</{tag}>"


@st.composite
def _document(draw: st.DrawFn) -> str:
    body = '<a href="https://site.example/first">first</a>' + "".join(draw(st.lists(_fragment(), max_size=5)))
    shape = draw(st.sampled_from(["fragment", "body", "full", "attrs", "no-close", "uppercase"]))
    head = "<head><title>t</title><style>a{color:red}</style></head>"
    if shape == "fragment":
        return body
    if shape == "body":
        return f"<body>{body}</body>"
    if shape == "attrs":
        return f'<!doctype html><html lang="en">{head}<body class="x" style="margin:0">{body}</body></html>'
    if shape == "no-close":
        return f"<html>{head}<body>{body}"
    if shape == "uppercase":
        return f"<HTML><BODY BGCOLOR=#fff>{body}</BODY></HTML>"
    return f"<!doctype html><html>{head}<body>{body}</body></html>"


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_document())
def test_any_html_gets_exactly_one_hidden_link_in_its_body(document: str) -> None:
    rewritten, links = track_html(
        document, "https://t.example/o/P.gif", lambda url: "https://t.example/c/L", HIDDEN
    )
    assert links, "the document has a tracked link"
    assert rewritten.count(HIDDEN) == 1
    anchors = _Anchors()
    anchors.feed(rewritten)
    anchors.close()
    assert anchors.hidden == 1  # a real tag, not text, an attribute or a comment
    if "<body" in document.lower():
        assert anchors.in_body_at_hidden  # inside the body, never in the head
        start = document.lower().index("<body")
        body_tag_end = document.index(">", start) + 1
        assert rewritten[:body_tag_end] == document[:body_tag_end]  # first in the body
    # Nothing but the inserted pieces changed: the author's HTML is byte for byte where it was.
    hidden_block = HIDDEN_LINK_TEMPLATE.format(href=HIDDEN)
    assert rewritten.replace(hidden_block, "", 1).count("https://t.example/c/L") == len(links)


def test_no_hidden_link_without_tracked_links() -> None:
    page = "<html><body><p>No links</p></body></html>"
    assert (
        HIDDEN
        not in track_html(page, "https://t.example/o/P.gif", lambda url: "https://t.example/c/L", HIDDEN)[0]
    )
    linked = '<body><a href="https://site.example/">x</a></body>'
    assert HIDDEN not in track_html(linked, None, lambda url: None, HIDDEN)[0]  # a link left alone
