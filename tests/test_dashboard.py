"""The dashboard: sign-in done right (CSRF, brake, safe redirects, flags), and in a real browser the numbers
a person sees are the report's, with the charts drawn."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user, delete_user
from deadpixel.config import Settings
from deadpixel.server.app import Deadpixel
from deadpixel.store.db import create_engine
from deadpixel.store.roles import Role

from .conftest import Server
from .helpers import deadpixel, make_pixels

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as test_client:
        yield test_client


def login_csrf(client: TestClient, next_path: str = "") -> str:
    page = client.get("/login" + (f"?next={next_path}" if next_path else ""))
    assert page.status_code == 200
    return page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def sign_in(client: TestClient, password: str = "correct horse", next_path: str = "/campaigns") -> int:
    csrf = login_csrf(client)
    response = client.post(
        "/login",
        data={"csrf": csrf, "name": "ann", "password": password, "next": next_path},
        follow_redirects=False,
    )
    return response.status_code


@SQLITE_ONLY
def test_signing_in_and_out(client: TestClient, settings: Settings) -> None:
    assert client.get("/campaigns", follow_redirects=False).headers["location"] == "/login?next=/campaigns"
    assert sign_in(client, "wrong") == 401
    forged = client.post("/login", data={"csrf": "forged", "name": "ann", "password": "correct horse"})
    assert forged.status_code == 403
    csrf = login_csrf(client)
    done = client.post(
        "/login",
        data={"csrf": csrf, "name": "ann", "password": "correct horse", "next": "/campaigns/spring"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/campaigns/spring"
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie  # plain http here
    page = client.get("/campaigns")
    assert page.status_code == 200 and "Campaigns" in page.text
    assert (
        "unsafe-inline" not in page.headers["content-security-policy"].split("script-src", 1)[1].split(";")[0]
    )
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

    assert client.post("/logout", data={"csrf": "nope"}, follow_redirects=False).status_code == 403
    csrf_session = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = client.post("/logout", data={"csrf": csrf_session}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/campaigns", follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_after_sign_in_only_paths_of_this_site(client: TestClient) -> None:
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        client.cookies.clear()
        csrf = login_csrf(client)
        response = client.post(
            "/login",
            data={"csrf": csrf, "name": "ann", "password": "correct horse", "next": evil},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/campaigns", evil


@SQLITE_ONLY
def test_password_guessing_is_braked_and_deleting_an_account_signs_it_out(
    client: TestClient, settings: Settings
) -> None:
    assert sign_in(client) == 303
    assert client.get("/campaigns", follow_redirects=False).status_code == 200
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann2", "x", Role.OWNER)  # first, since the last owner cannot be deleted
        delete_user(conn, "ann")
    engine.dispose()
    assert client.get("/campaigns", follow_redirects=False).status_code == 303  # the account is gone
    statuses = [sign_in(client, f"guess {i}") for i in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429


@SQLITE_ONLY
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.slow
def test_in_a_real_browser_the_page_shows_the_reports_numbers_and_its_charts(
    server: Server, settings: Settings, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    made = deadpixel("user", "create", "ann", "--password-stdin", input="correct horse\n")
    assert made.returncode == 0, made.stderr
    import httpx

    pixels = make_pixels(settings, 6, campaign="spring", sent_at=time.time() - 3600)
    for i, (_, path) in enumerate(pixels[:4]):  # four of six opened, one of them twice, one by a scanner
        httpx.get(server.url + path, headers={"user-agent": THUNDERBIRD if i else "curl/8.5.0"})
    httpx.get(server.url + pixels[1][1], headers={"user-agent": THUNDERBIRD})
    report = json.loads(deadpixel("report", "spring", "--json", check=True).stdout)
    assert (report["sent"], report["unique_opens"], report["machine_opens"], report["total_opens"]) == (
        6,
        4,
        1,
        5,
    )

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server.url + "/campaigns/spring")
            assert "/login" in page.url
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", "correct horse")
            page.click("button[type=submit]")
            page.wait_for_url("**/campaigns/spring")
            figure = {
                key: page.locator(f"[data-figure={key}]").inner_text()
                for key in ("sent", "unique_opens", "machine_opens", "total_opens", "open_rate")
            }
            assert figure == {
                "sent": "6", "unique_opens": "4", "machine_opens": "1", "total_opens": "5",
                "open_rate": f"{report['open_rate'] * 100:.1f}%",
            }  # fmt: skip
            assert page.locator("#opens-by-hour svg.wide rect.people").count() >= 1
            assert page.locator("#opens-by-hour svg.wide rect.machines").count() >= 1  # the scanner
            assert page.locator("figure.breakdown svg").count() >= 3
            shaded = page.locator("#heatmap td:not(.h0)")
            assert shaded.count() >= 1 and sum(int(n) for n in shaded.all_inner_texts()) == 5
            assert page.locator("#heatmap td").count() == 7 * 24
            bars = page.locator("#time-to-open svg g.row")
            assert bars.count() == 10 and page.locator("#time-to-open svg").bounding_box()["height"] > 100  # type: ignore[index]
            assert page.locator("[data-figure=time_to_first_open]").inner_text().endswith(("min", "h"))
            assert page.locator("#recipients tbody tr").count() == 6
            page.screenshot(path=str(tmp_path / "campaign.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 800})  # a phone
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            page.screenshot(path=str(tmp_path / "campaign-phone.png"), full_page=True)
            assert page.locator("#heatmap").is_visible()
            page.click("#recipients tbody tr:first-child a")
            assert page.locator("h1").inner_text().endswith("@example.com")
        finally:
            browser.close()
    assert (tmp_path / "campaign.png").stat().st_size > 10_000


@SQLITE_ONLY
def test_a_new_pixel_from_the_dashboard_is_tracked(client: TestClient, settings: Settings) -> None:
    assert sign_in(client) == 303
    form = client.get("/pixels/new")
    csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    bad = client.post("/pixels/new", data={"csrf": csrf, "to": "not an address"})
    assert bad.status_code == 400 and "recipient&#39;s address" in bad.text
    made = client.post("/pixels/new", data={"csrf": csrf, "to": "bob@example.com", "campaign": "q3"})
    assert made.status_code == 200
    url = made.text.split('<code id="pixel-url">', 1)[1].split("<", 1)[0]
    assert url.startswith(settings.base_url + "/o/") and "&lt;img src=" in made.text
    assert client.get(url.removeprefix(settings.base_url)).status_code == 200
    assert client.post("/pixels/new", data={"to": "x@example.com"}).status_code == 403  # no CSRF token
    campaign = client.get("/campaigns/q3")
    assert 'data-figure="total_opens">1<' in campaign.text and "bob@example.com" in campaign.text


@SQLITE_ONLY
def test_the_demo_campaign_has_every_kind_of_open_and_adds_up(settings: Settings) -> None:
    run = deadpixel
    seeded = run("demo", "--messages", "300")
    assert seeded.returncode == 0, seeded.stderr
    report = json.loads(run("report", "Demo: monthly newsletter", "--json").stdout)
    assert report["sent"] == 300 - 1  # one send in 200 fails: not counted as sent
    # A few mailboxes are gone (one in 50 bounces hard), one in 100 bounces soft, three readers complain.
    assert report["bounced"] == 6 and report["soft_bounced"] == 3 and report["complaints"] == 3
    assert report["delivered"] == report["sent"] - report["bounced"]
    assert report["unique_opens"] == report["human_opens"] + report["machine_opens"]
    assert 0 < report["human_open_rate"] < report["open_rate"] < 1  # machines inflate the raw rate
    assert report["unique_clicks"] > 0
    # every chart has data: opens over time, the heatmap, time to first open, breakdowns, links
    assert sum(map(sum, report["heatmap"]["cells"])) == report["total_opens"]
    assert sum(day["opens"] for day in report["opens_over_time"]["daily"]) == report["total_opens"]
    assert len(report["opens_over_time"]["hourly"]) == 72
    assert report["time_to_first_open"]["messages"] == report["human_opens"]  # each reader who clicked opened
    assert all(report["breakdowns"][field] for field in ("kind", "client", "device", "os", "country"))
    assert len(report["top_links"]) == 3 and report["top_links"][0]["unique_clickers"] > 0
    kinds = {row["kind"] for row in json.loads(run("opens", "--campaign", "Demo: monthly newsletter",
                                                    "--limit", "5000", "--json").stdout)}  # fmt: skip
    assert kinds == {"human", "proxy", "prefetch", "scanner"}
    again = run("demo")
    assert again.returncode == 1 and "already there" in again.stderr


@SQLITE_ONLY
def test_a_new_password_ends_every_session_even_a_copied_cookie(client: TestClient) -> None:
    assert sign_in(client) == 303
    stolen = dict(client.cookies)
    assert client.get("/campaigns", follow_redirects=False).status_code == 200
    changed = deadpixel("user", "passwd", "ann", "--password-stdin", input="a new one\n")
    assert changed.returncode == 0, changed.stderr
    assert client.get("/campaigns", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.update(stolen)
    assert client.get("/campaigns", follow_redirects=False).status_code == 303
    assert sign_in(client, "a new one") == 303


def recipient_rows(html: str) -> list[str]:
    """The addresses in the recipients table, in order."""
    body = html.split('<table class="list" id="recipients">', 1)[1].split("</table>", 1)[0]
    return [cell.split(">", 1)[1].split("<", 1)[0] for cell in body.split('<a href="/messages/')[1:]]


def test_the_campaign_page_searches_sorts_and_pages_its_recipients(
    client: TestClient, settings: Settings
) -> None:
    pixels = make_pixels(settings, 60, campaign="autumn")  # r0 ... r59@example.com
    for _, path in pixels[:3]:
        assert client.get(path, headers={"user-agent": THUNDERBIRD}).status_code == 200
    client.get(pixels[1][1], headers={"user-agent": THUNDERBIRD})
    assert sign_in(client) == 303

    first = client.get("/campaigns/autumn")
    assert first.status_code == 200
    assert "60 recipients" in first.text and "page 1 of 2" in first.text
    rows = recipient_rows(first.text)
    assert len(rows) == 50 and set(rows[:3]) == {"r0@example.com", "r1@example.com", "r2@example.com"}
    assert (
        'rel="next" href="/campaigns/autumn?sort=status&amp;order=desc&amp;page=2#recipients"' in first.text
    )
    second = client.get("/campaigns/autumn?sort=status&order=desc&page=2")
    assert len(recipient_rows(second.text)) == 10 and not set(recipient_rows(second.text)) & set(rows)
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text

    by_opens = recipient_rows(client.get("/campaigns/autumn?sort=opens").text)
    assert by_opens[0] == "r1@example.com"  # opened twice
    by_address = recipient_rows(client.get("/campaigns/autumn?sort=recipient&order=asc").text)
    assert by_address[:3] == ["r0@example.com", "r10@example.com", "r11@example.com"]  # "0" sorts before "@"
    by_first_open = recipient_rows(client.get("/campaigns/autumn?sort=first_open&order=asc").text)
    assert by_first_open[:3] == ["r0@example.com", "r1@example.com", "r2@example.com"]

    found = client.get("/campaigns/autumn?q=R5")
    assert sorted(recipient_rows(found.text)) == sorted([f"r{n}@example.com" for n in (5, *range(50, 60))])
    assert "11 recipients matching" in found.text
    assert recipient_rows(client.get("/campaigns/autumn?q=%25").text) == []  # a literal %, no wildcard
    assert 'data-figure="sent">60<' in found.text  # the numbers are the campaign's, whatever the search


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("page=-1", "page must be a whole number"),
        ("page=0", "page must be a whole number"),
        ("page=abc", "page must be a whole number"),
        ("page=99999999999999999999", "page must be a whole number"),
        ("page=%D9%A3", "page must be a whole number"),  # an Arabic-Indic digit is not one of ours
        ("sort=nonsense", "sort must be one of"),
        ("sort=status;drop%20table", "sort must be one of"),
        ("order=sideways", "order must be asc or desc"),
        ("q=" + "x" * 321, "longer than 320"),
        ("q=a%00b", "NUL"),
    ],
)
@SQLITE_ONLY
def test_a_malformed_table_parameter_gets_a_clear_400(
    client: TestClient, settings: Settings, query: str, says: str
) -> None:
    make_pixels(settings, 1, campaign="autumn")
    assert sign_in(client) == 303
    response = client.get(f"/campaigns/autumn?{query}")
    assert response.status_code == 400 and says in response.text


@SQLITE_ONLY
def test_the_campaigns_list_draws_a_sparkline_of_opens_per_day(
    client: TestClient, settings: Settings
) -> None:
    pixels = make_pixels(settings, 3, campaign="autumn")
    make_pixels(settings, 2, campaign="quiet")
    client.get(pixels[0][1], headers={"user-agent": THUNDERBIRD})
    assert sign_in(client) == 303
    page = client.get("/campaigns")
    row = page.text.split('href="/campaigns/autumn"', 1)[1].split("</tr>", 1)[0]
    # The charts carry no script: the only one is the live feed's, loaded from /static.
    assert 'class="sparkline"' in row and "1 in all" in row and "<script" not in row
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/feed.js" defer>']
    quiet = page.text.split('href="/campaigns/quiet"', 1)[1].split("</tr>", 1)[0]
    assert 'class="sparkline"' not in quiet and "none" in quiet


@SQLITE_ONLY
def test_the_campaign_page_charts_the_time_range_chosen(client: TestClient, settings: Settings) -> None:
    pixels = make_pixels(settings, 2, campaign="autumn", sent_at=time.time() - 600)
    client.get(pixels[0][1], headers={"user-agent": THUNDERBIRD})
    assert sign_in(client) == 303
    whole = client.get("/campaigns/autumn")
    assert 'href="?range=all#opens" aria-current="page"' in whole.text and 'id="opens-by-hour"' in whole.text
    recent = client.get("/campaigns/autumn?range=24h")
    assert 'href="?range=24h#opens" aria-current="page"' in recent.text
    assert "Last 24 hours, by hour" in recent.text and "1 open (1 by people" in recent.text
    assert "last 24 hours)" in recent.text  # the heatmap says its range
    assert 'data-figure="total_opens">1<' in recent.text  # the numbers count the whole campaign
    bad = client.get("/campaigns/autumn?range=1y")
    assert bad.status_code == 400 and "range must be one of 24h, 7d, 30d, all" in bad.text
