"""The click map's rendering (hostile HTML made inert, links numbered as compose numbered them) and best
send hours (usual hours from human opens only, in the reader's zone where the country has one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.events import OpenEvent
from deadpixel.mail.compose import rewrite_links
from deadpixel.reports import sendtime
from deadpixel.reports.clickmap import CopyClicks, LinkClicks
from deadpixel.server.app import Deadpixel
from deadpixel.store import abtests, rollups
from deadpixel.store.db import create_engine
from deadpixel.store.messages import campaign_id, create_message
from deadpixel.store.writes import write_opens
from deadpixel.web.clickmap import render

from .test_analytics import LABELS
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, sign_in

OWN = "https://t.example.com/"
HOSTILE = """<!doctype html><html><head><base href="https://evil.example/"><meta http-equiv="refresh"
content="0;url=https://evil.example/"><link rel="stylesheet" href="https://evil.example/x.css">
<script>alert(1)</script>
<style>body{background:url(https://evil.example/bg.png)} p>b{color:red}</style></head>
<body onload="alert(2)"><p>Hi &amp; welcome <b>Ann</b></p>
<img src="https://evil.example/track.gif" alt="logo" onerror="alert(3)">
<img src="data:image/png;base64,AAAA" alt="dot">
<a href="https://shop.example/one">One</a> <a href="https://shop.example/two?a=1&amp;b=2">Two</a>
<a href="https://t.example.com/u/abc">Unsubscribe</a> <a href="mailto:me@example.org">Mail me</a>
<form action="https://evil.example/post"><input name="q"><button>Go</button></form>
<iframe src="https://evil.example/frame"><p>inside the frame</p></iframe>
<svg><a href="javascript:alert(4)">x</a></svg>
<p style="background-image:url('https://evil.example/p.png')">styled</p><!-- a comment --></body></html>"""


def test_hostile_html_is_made_inert_and_the_tracked_links_get_their_badges() -> None:
    copy = CopyClicks("A", HOSTILE, {1: LinkClicks(human_clicks=5, clickers=3)}, clickers=4)
    shown = render(copy, OWN)
    doc = shown.document.lower()
    gone_all = ("<script", "alert(", "<base", "<meta", "<link", "<form", "<input", "<iframe", "the frame",
                "href", "evil.example", "onload", "onerror", "javascript:", "a comment", "url(")  # fmt: skip
    for gone in gone_all:
        assert gone not in doc, gone
    assert 'src="data:image/png;base64,aaaa"' in doc and 'alt="logo"' in doc  # inline images only
    assert "hi &amp; welcome <b>ann</b>" in doc and "p>b{color:red}" in doc
    # Numbered as compose numbered the sent copy: our own unsubscribe page and mailto: are not tracked.
    _, tracked = rewrite_links(HOSTILE, lambda url: None if url.startswith(OWN) else url)
    assert (
        [link.url for link in shown.links]
        == tracked
        == ["https://shop.example/one", "https://shop.example/two?a=1&b=2"]
    )
    assert [(link.number, link.human_clicks, link.clickers, link.share) for link in shown.links] == [
        (0, 0, 0, 0.0),
        (1, 5, 3, 0.75),
    ]
    assert "#2 · 5 clicks · 75% of clickers" in shown.document and "#1 · 0 clicks" in shown.document


# --- best send hours ----------------------------------------------------------------------------------------

DAY0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
HUMAN_JP = "human/Apple Mail/mobile/iOS/JP"
HUMAN_US = "human/Thunderbird/desktop/Linux/US"
PREFETCH_JP = "prefetch/Apple Mail/unknown//JP"
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def writer(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(settings.database_url, writer=True)
    yield engine
    engine.dispose()


def at(day: int, hour: int, minute: int = 10) -> float:
    return (DAY0 + timedelta(days=day, hours=hour, minutes=minute)).timestamp()


def test_a_readers_usual_hour_comes_from_their_human_opens_in_their_zone(writer: Engine) -> None:
    with writer.begin() as conn:
        jp = [
            create_message(conn, recipient="aki@example.jp", campaign="news", sent_at=at(d, 0, 0))
            for d in range(4)
        ]
        us = create_message(conn, recipient="bo@example.com", campaign="news", sent_at=at(0, 0, 0))
        machine = create_message(conn, recipient="mpp@example.org", campaign="news", sent_at=at(0, 0, 0))
        events = [
            # 22:10 UTC is 07:10 in Tokyo: three mornings, one evening; Apple's prefetch at 01:xx five times.
            *(OpenEvent(jp[d], at(d, 22), "192.0.2.1", HUMAN_JP, "GET") for d in range(3)),
            OpenEvent(jp[3], at(3, 11), "192.0.2.1", HUMAN_JP, "GET"),
            *(OpenEvent(jp[d], at(d, 1), "17.58.0.1", PREFETCH_JP, "GET") for d in range(4)),
            OpenEvent(jp[0], at(0, 1, 30), "17.58.0.1", PREFETCH_JP, "GET"),
            OpenEvent(us, at(0, 15), "192.0.2.2", HUMAN_US, "GET"),  # several zones: the dashboard's
            OpenEvent(machine, at(0, 5), "17.58.0.1", PREFETCH_JP, "GET"),
        ]
        write_opens(conn, events, LABELS)
    rollups.catch_up(writer)
    with writer.connect() as conn:
        assert sendtime.usual_hour(conn, "aki@example.jp", PARIS) == (7, ZoneInfo("Asia/Tokyo"))
        assert sendtime.usual_hour(conn, "bo@example.com", PARIS) == (16, PARIS)  # 15:10 UTC, CET
        assert sendtime.usual_hour(conn, "mpp@example.org", PARIS) is None  # only a prefetch: no history
        hours = sendtime.audience_hours(conn, "news", PARIS)
        assert hours["human_opens"] == 5 and hours["best_hours"][0] == 23  # 22:10 UTC is 23:10 in Paris
        best = sendtime.audience_best_hour(conn, "news", PARIS)
        now = DAY0 + timedelta(days=10, hours=3)  # 12:00 in Tokyo
        assert sendtime.next_best_time(conn, "aki@example.jp", now, PARIS, best) == datetime(
            2026, 11, 13, 7, tzinfo=ZoneInfo("Asia/Tokyo")
        )
        nobody = sendtime.next_best_time(conn, "mpp@example.org", now, PARIS, best)
        assert nobody == datetime(2026, 11, 12, 23, tzinfo=PARIS)
        assert sendtime.next_best_time(conn, "new@example.org", now, PARIS, None) == now


def test_countries_with_one_zone_are_known() -> None:
    zones = sendtime.country_zones()
    if not zones:
        pytest.skip("no /usr/share/zoneinfo/zone.tab")
    assert zones["JP"] == "Asia/Tokyo" and zones["FR"] == "Europe/Paris" and "US" not in zones


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 23),
    st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "UTC"]),
)
@settings(max_examples=150, deadline=None)
def test_the_next_best_time_is_within_a_day_and_at_that_hour(now: datetime, hour: int, zone: str) -> None:
    when = sendtime.next_at_hour(now, hour, ZoneInfo(zone))
    assert now < when <= now + timedelta(hours=24)
    local = when.astimezone(ZoneInfo(zone))
    assert local.hour == hour or (local - timedelta(hours=1)).hour == hour  # or just after a skipped hour


# --- in a real browser --------------------------------------------------------------------------------------

ATTACK = (
    "<html><head><script>parent.document.title = 'pwned'</script></head><body>"
    '<p>Hello</p><img src="https://evil.example/pixel.gif" alt="logo">'
    "<svg onload=\"parent.document.title='pwned'\"></svg>"
    '<p style="background:url(https://evil.example/bg.png)">x</p>'
    '<a href="https://shop.example/one">One</a> <a href="https://shop.example/two">Two</a></body></html>'
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.slow
def test_in_chromium_the_click_map_runs_nothing_and_loads_nothing(settings: Settings, writer: Engine) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.org", campaign="attack", sent_at=at(0, 0))
        cid = campaign_id(conn, "attack")
        assert cid is not None
        abtests.keep_html(conn, cid, "", mid, ATTACK)
        create_user(conn, "ann", "correct horse")
    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        assert sign_in(client) == 303
        page = client.get("/campaigns/attack")
        style = client.get("/static/style.css")
    requested: list[str] = []

    def serve(route: Any) -> None:
        url = route.request.url
        requested.append(url)
        if url == "http://testserver/campaigns/attack":
            route.fulfill(status=200, headers=dict(page.headers), body=page.text)
        elif url.endswith("/static/style.css"):
            route.fulfill(status=200, headers={"content-type": "text/css"}, body=style.text)
        else:
            route.fulfill(status=404, body="")

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.route("**/*", serve)
            tab.goto("http://testserver/campaigns/attack")
            frame = tab.frame_locator("iframe.message-preview")
            assert frame.locator("[data-link='1'] .dp-badge").inner_text() == "#2 · 0 clicks"
            assert frame.locator("text=Hello").is_visible()
            tab.wait_for_timeout(300)
            assert tab.title() != "pwned"
        finally:
            browser.close()
    assert not [url for url in requested if "evil.example" in url or "shop.example" in url], requested


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_forgetting_a_person_erases_the_copy_kept_of_their_message_and_their_place_in_the_queue(
    writer: Engine,
) -> None:
    from sqlalchemy import func, select

    from deadpixel.store.maintenance import forget_recipient
    from deadpixel.store.schema import ab_waiting, sent_html

    with writer.begin() as conn:
        mid = create_message(conn, recipient="Ann@example.org", campaign="kept", sent_at=at(0, 0))
        cid = campaign_id(conn, "kept")
        assert cid is not None
        abtests.keep_html(conn, cid, "A", mid, "<p>Hi Ann</p>")
        abtests.hold(
            conn, cid, [abtests.Waiting("ann@example.org", 2, "Ann@example.org", {"n": "Ann"}, True)]
        )
        forget_recipient(conn, "ann@example.org")
        assert conn.execute(select(func.count()).select_from(sent_html)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(ab_waiting)).scalar_one() == 0
