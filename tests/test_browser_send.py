"""Sending a campaign from the dashboard: Send asks first ("Send to N recipients", counted after the
suppression list, invalid and duplicate rows left out, warnings shown but not blocking), a confirmed draft
becomes a stored campaign the server sends once however often the form is posted, a schedule is read in the
dashboard's zone, the campaign page shows the send live and steers it, and a viewer changes nothing.

In process against the whole app (both databases) for the rules; one slow test drives headless Chromium
against a real ``deadpixel serve`` and a real, slow SMTP server through a restart (SIGTERM) and a kill -9
mid-send, counting what arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from starlette.testclient import TestClient

from deadpixel.config import Settings
from deadpixel.server.app import Deadpixel
from deadpixel.store import audit
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store.db import create_engine
from deadpixel.store.schema import campaign_drafts, campaign_jobs
from deadpixel.store.suppressions import suppress

from .conftest import Server
from .smtp_sink import HOST, Sink, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_browser_e2e import CHROMIUM, CHROMIUM_ARGS
from .test_campaign_jobs import received, state_of, wait_for
from .test_compose_page import HTML, App, _people

LIST = (
    "email,first_name\n"
    "ann@example.org,Ann\n"
    "bob@example.org,Bob\n"
    "cy@example.org,Cy\n"
    "not-an-address,Dee\n"  # invalid
    "ANN@example.org,Ann again\n"  # a duplicate of line 2
    "gone@example.org,Gone\n"  # on the suppression list
)


def confirm_form(page: str) -> tuple[str, str]:
    """The confirmation's action and its button's text."""
    action = re.search(r'action="(/compose/\d+/send)"', page)
    button = re.search(r'value="send" class="primary">([^<]+)<', page)
    assert action and button, page
    return action.group(1), button.group(1)


def job_rows(settings: Settings) -> list[sa.Row[tuple[int, str]]]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        found = list(conn.execute(sa.select(campaign_jobs.c.id, campaign_jobs.c.state)))
    engine.dispose()
    return found


@pytest.fixture
def app(smtp: SMTPServerHandle, settings: Settings) -> Iterator[App]:
    """The whole app in process (its due-work thread sends to the real SMTP sink), three accounts."""
    _people(settings)
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        suppress(conn, "gone@example.org", "unsubscribe")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        yield App(client, settings)


def test_send_asks_first_then_sends_once_however_often_it_is_confirmed(
    app: App, smtp: SMTPServerHandle
) -> None:
    csrf = app.sign_in("sam")
    asked = app.compose(csrf, "/compose/send", csv=LIST, html=HTML + '<a href="tel:+331">Call</a>')
    assert asked.status_code == 200, asked.text
    action, button = confirm_form(asked.text)
    assert button == "Send to 3 recipients"  # ann, bob, cy: not the invalid, duplicate or suppressed rows
    assert "1 on the suppression list" in asked.text and "1 invalid row," in asked.text
    assert "1 duplicate" in asked.text
    assert "tel:+331" in asked.text  # the preview's warning, shown; the button is there all the same
    assert app.rows(campaign_drafts) and job_rows(app.settings) == []  # asking sends nothing

    first = app.client.post(action, data={"csrf": csrf, "name": "Spring sale", "action": "send"})
    again = app.client.post(action, data={"csrf": csrf, "name": "Spring sale", "action": "send"})
    for answer in (first, again):  # the second lands on the same send; it starts no other
        assert answer.status_code == 200 and answer.url.path == "/campaigns/Spring sale", answer.text
    assert len(job_rows(app.settings)) == 1 and app.rows(campaign_drafts) == []

    wait_for(lambda: job_rows(app.settings)[0].state == "done", 30, "the server to send it")
    got = Counter(rcpt for message in smtp.sink.messages for rcpt in message.rcpt_tos)
    assert got == Counter({"ann@example.org": 1, "bob@example.org": 1, "cy@example.org": 1})
    status = app.client.get("/sending/status", params={"campaign": "Spring sale"}).json()
    assert (status["state"], status["sent"], status["left"], status["total"]) == ("done", 3, 0, 6)
    page = app.client.get("/campaigns/Spring sale").text
    assert 'id="send-state" role="status">done<' in page
    assert "not-an-address" in page and "duplicate of line 2" in page  # the rows not sent, as a table
    csv = app.client.get("/sending/problems.csv", params={"campaign": "Spring sale"})
    assert csv.status_code == 200 and "attachment" in csv.headers["content-disposition"]
    assert csv.text.startswith("line,value,kind,reason") and "gone@example.org" in csv.text
    engine = create_engine(app.settings.database_url)
    with engine.connect() as conn:
        actions = [entry.action for entry in audit.recent(conn)]
    engine.dispose()
    assert actions.count("campaign.send") == 1 and "campaign.store" in actions


def test_a_schedule_is_read_in_the_dashboards_zone_and_the_page_steers_it(
    smtp: SMTPServerHandle, settings: Settings
) -> None:
    berlin = dataclasses.replace(settings, timezone="Europe/Berlin")
    _people(berlin)
    with TestClient(Deadpixel(berlin), base_url="http://testserver") as client:
        app = App(client, berlin)
        csrf = app.sign_in("sam")
        action, _ = confirm_form(app.compose(csrf, "/compose/send", csv=LIST).text)
        past = app.client.post(action, data={"csrf": csrf, "action": "schedule", "at": "2020-01-01T09:00"})
        assert past.status_code == 400 and "has passed" in past.text and 'id="confirm-send"' in past.text
        empty = app.client.post(action, data={"csrf": csrf, "action": "schedule", "at": ""})
        assert empty.status_code == 400 and "choose a date and a time" in empty.text
        assert job_rows(berlin) == []  # the draft is still there to try again

        year = dt.date.today().year + 1
        done = app.client.post(action, data={"csrf": csrf, "action": "schedule", "at": f"{year}-01-05T09:30"})
        assert done.status_code == 200 and done.url.path == "/campaigns/Spring sale"
        status = app.client.get("/sending/status", params={"campaign": "Spring sale"}).json()
        local = dt.datetime(year, 1, 5, 9, 30, tzinfo=ZoneInfo("Europe/Berlin"))
        assert status["state"] == "scheduled"
        assert dt.datetime.fromisoformat(status["due_at"]).timestamp() == local.timestamp()

        def steer(what: str) -> str:
            answer = app.client.post(f"/sending/{what}", data={"csrf": csrf, "campaign": "Spring sale"})
            assert answer.status_code == 200, answer.text
            return str(app.client.get("/sending/status", params={"campaign": "Spring sale"}).json()["state"])

        page = app.client.get("/campaigns/Spring sale").text
        assert re.search(r'action="/sending/pause" data-states="[^"]*">', page)  # shown while scheduled
        assert re.search(r'action="/sending/resume" data-states="paused" hidden>', page)
        assert (
            steer("pause") == "paused" and steer("resume") == "scheduled" and steer("cancel") == "cancelled"
        )
        refused = app.client.post("/sending/resume", data={"csrf": csrf, "campaign": "Spring sale"})
        assert refused.status_code == 409 and "cancelled" in refused.text
        unknown = app.client.post("/sending/explode", data={"csrf": csrf, "campaign": "Spring sale"})
        assert unknown.status_code == 404
    assert smtp.sink.messages == []


def test_a_viewer_sends_and_steers_nothing(app: App) -> None:
    csrf = app.sign_in("sam")
    action, _ = confirm_form(app.compose(csrf, "/compose/send", csv=LIST).text)
    year = dt.date.today().year + 1
    at = f"{year}-03-01T08:00"
    app.client.post(action, data={"csrf": csrf, "action": "schedule", "at": at})
    assert len(job_rows(app.settings)) == 1

    csrf = app.sign_in("vic")
    posts = [
        ("/compose/send", {}),
        ("/compose/1/send", {"action": "send"}),
        *((f"/sending/{what}", {"campaign": "Spring sale"}) for what in ("pause", "resume", "cancel")),
    ]
    for path, data in posts:
        answer = app.client.post(path, data={"csrf": csrf, **data})
        assert answer.status_code == 403, path
    page = app.client.get("/campaigns/Spring sale").text
    assert 'id="send-state" role="status">scheduled<' in page and "/sending/pause" not in page
    assert app.client.get("/sending/status", params={"campaign": "Spring sale"}).status_code == 200
    assert [row.state for row in job_rows(app.settings)] == ["scheduled"]


def test_an_ab_draft_or_an_empty_list_is_not_sent_and_says_why(app: App) -> None:
    csrf = app.sign_in("olga")
    ab = app.compose(csrf, "/compose/send", subject_b="Last chance", ab_share="10")
    assert ab.status_code == 400 and "A/B tests are not sent from the dashboard yet" in ab.text
    assert 'id="confirm-send"' not in ab.text and app.rows(campaign_drafts)
    nobody = app.compose(csrf, "/compose/send", csv="email\ngone@example.org\n", name="Nobody")
    assert nobody.status_code == 200 and "Nobody on the list can get it" in nobody.text
    assert 'id="confirm-send"' not in nobody.text
    for name in ("Nobody", "x\x00y", "n" * 5000):  # no such draft, whatever the form names
        gone = app.client.post("/compose/999999/send", data={"csrf": csrf, "name": name, "action": "send"})
        assert gone.status_code == 404 and "No such draft" in gone.text
    assert job_rows(app.settings) == []


# --- a real server, a real browser -----------------------------------------------------------------------


class SlowSink(Sink):
    """A sink that takes its time over each message, so that a send is caught in the middle."""

    delay = 0.05

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_smtp(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[SMTPServerHandle]:
    handle = SMTPServerHandle(SlowSink()).start()
    for name, value in {
        "DEADPIXEL_SMTP_HOST": HOST, "DEADPIXEL_SMTP_PORT": str(handle.port), "DEADPIXEL_SMTP_TLS": "none",
        "DEADPIXEL_SMTP_HELO": "client.test", "DEADPIXEL_MAIL_FROM": "News <news@example.com>",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_in_chromium_a_send_is_confirmed_watched_paused_and_survives_a_restart_and_a_kill_9(
    slow_smtp: SMTPServerHandle,
    settings: Settings,
    server_factory: type[Server],
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    SlowSink.delay = 0.3  # four connections: about 13 messages a second
    engine = create_engine(settings.database_url)
    _people(settings)
    server = server_factory(env=dict(env)).start()

    def restart(campaign: str) -> Server:
        """A new server on the same store (on a port of its own: the old one may linger a moment); the
        browser's session cookie holds for it, as cookies do not depend on the port."""
        started = server_factory(env=dict(env)).start()
        page.goto(f"{started.url}/campaigns/{campaign}")
        return started

    def upload(prefix: str, n: int) -> Path:
        path = tmp_path / f"{prefix}.csv"
        path.write_text("email,first_name\n" + "".join(f"{prefix}{i}@example.org,P{i}\n" for i in range(n)))
        return path

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(server.url + "/login")
            page.get_by_label("Name").fill("sam")
            page.get_by_label("Password").fill("correct horse")
            page.get_by_role("button", name="Sign in").click()

            def compose(name: str, listed: Path) -> None:
                page.get_by_role("link", name="New campaign").click()
                page.get_by_label("Name").fill(name)
                page.get_by_label("Subject", exact=True).fill("Hi {{ first_name }}")
                page.get_by_label("Recipients").set_input_files(str(listed))
                page.get_by_label("HTML (Jinja2").fill(HTML)
                page.get_by_role("button", name="Preview").click()
                assert page.locator("#preview-subject").inner_text() == "Hi P0"

            def progress(key: str) -> int:
                return int(page.locator(f'#send-progress [data-progress="{key}"]').inner_text())

            compose("Launch", upload("a", 60))
            page.get_by_label("Send a test to").fill("me@example.net")
            page.get_by_role("button", name="Send test").click()
            assert "Test sent to me@example.net" in page.locator("#notice").inner_text()
            page.get_by_role("button", name="Send", exact=True).click()
            page.get_by_role("button", name="Send to 60 recipients", exact=True).click()
            page.wait_for_url("**/campaigns/Launch")

            # Live: the numbers move without a reload; Pause holds the send, Resume carries on.
            sent = "document.querySelector('#send-progress [data-progress=sent]').textContent"
            page.wait_for_function(f"() => Number({sent}) >= 4")
            page.get_by_role("button", name="Pause").click()
            page.wait_for_url("**/campaigns/Launch")
            assert page.locator("#send-state").inner_text() == "paused"
            time.sleep(1.0)  # the messages in hand when it paused are finished, no others begun
            held = len(slow_smtp.sink.messages)
            time.sleep(1.0)
            assert len(slow_smtp.sink.messages) == held < 61, "sent while paused"
            page.get_by_role("button", name="Resume").click()

            # SIGTERM in the middle, then a server again: the send carries on where it stopped.
            wait_for(lambda: len(slow_smtp.sink.messages) >= held + 8, 30, "the send to be under way again")
            # (Away from the page first: a stopping server waits up to 15 s for the live feed's open stream,
            # sending all the while; deadpixel.web.feed.)
            page.goto("about:blank")
            assert server.stop() == 0
            assert len(slow_smtp.sink.messages) < 61 and state_of(engine, "Launch") != "done"
            server = restart("Launch")
            page.wait_for_function("() => document.getElementById('send-state').textContent === 'done'")
            assert progress("sent") == 60 and progress("left") == 0
            assert received(slow_smtp) == Counter(
                {**{f"a{i}@example.org": 1 for i in range(60)}, "me@example.net": 1}
            )

            # kill -9 in the middle of a second campaign: nothing twice, nothing lost but what was in flight.
            compose("Again", upload("b", 60))
            page.get_by_role("button", name="Send", exact=True).click()
            page.get_by_role("button", name="Send to 60 recipients", exact=True).click()
            page.wait_for_url("**/campaigns/Again")
            wait_for(lambda: len(slow_smtp.sink.messages) >= 61 + 12, 30, "the second send to be under way")
            server.kill()
            with engine.begin() as conn:  # the dead server's lease runs out
                conn.execute(sa.update(campaign_jobs).values(lease_until=time.time() - 1))
            server = restart("Again")
            page.wait_for_function("() => document.getElementById('send-state').textContent === 'done'")
            rendered = int(page.locator("[data-problems]").first.get_attribute("data-problems") or 0)
            if progress("problems") != rendered:  # refused after the page was rendered: "reload to list them"
                assert page.locator("#problems-newer").is_visible()
            page.reload()
            table = page.locator("#send-problems").inner_text() if progress("problems") else ""
        finally:
            browser.close()
    server.stop()

    with engine.connect() as conn:
        job = jobs.latest(conn, "Again")
        assert job is not None
        uncertain = {p.value for p in jobs.list_problems(conn, job.id) if p.kind == "uncertain"}
    engine.dispose()
    got = {rcpt for rcpt, n in received(slow_smtp).items() if rcpt.startswith("b")}
    assert max(received(slow_smtp).values()) == 1  # nobody twice, in either campaign
    everyone = {f"b{i}@example.org" for i in range(60)}
    assert everyone - uncertain <= got and got | uncertain == everyone  # uncertain rows are reported
    assert all(address in table for address in uncertain)
