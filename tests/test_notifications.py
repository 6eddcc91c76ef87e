"""Read notices: the first human open of a ``--notify`` message makes exactly one notice, by email through a
real SMTP server (aiosmtpd on loopback) or to a real HTTP receiver in each push/chat format; prefetches,
scanners, the sender's own reads and second opens make none; the outbox row survives a restart."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import ConfigError, Settings, load_settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import HIDDEN_LINK, ClickEvent, OpenEvent
from deadpixel.hooks.deliver import Deliverer, Policy
from deadpixel.hooks.notify import Destination, Notice, NoticeConfig, Notifier, detect_format, url_format
from deadpixel.relay.message import parse
from deadpixel.server.app import Deadpixel
from deadpixel.store import notices
from deadpixel.store.clicks import write_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.links import save_links
from deadpixel.store.messages import campaign_id, create_message
from deadpixel.store.relayed import claim
from deadpixel.store.schema import messages, notify_settings, webhook_deliveries
from deadpixel.store.writes import write_opens
from tests.conftest import Server

from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_dashboard import sign_in
from .test_webhooks import Receiver, receiver_fixture  # noqa: F401  (the fixture)

THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
HOME_IP = "81.2.69.160"  # a UK broadband address: a reader at home
APPLE_PREFETCH = ("17.58.0.1", "Mozilla/5.0")  # Apple's network, Mail Privacy Protection's bare user agent
SELF_IP = "203.0.113.9"
CLASSIFIER = OpenClassifier.from_settings(
    Settings(data_dir=Path("."), database_url="sqlite://", self_ips=load_settings({}).self_ips)
)


@pytest.fixture
def engines(settings: Settings) -> Iterator[tuple[Engine, Engine]]:
    reader = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    yield reader, writer
    reader.dispose()
    writer.dispose()


def classifier(self_ips: str = "") -> OpenClassifier:
    return OpenClassifier.from_settings(load_settings({}, data_dir=".", self_ips=self_ips))


def open_at(engine: Engine, mid: str, ip: str, ua: str, self_ips: str = "") -> None:
    with engine.begin() as conn:
        write_opens(conn, [OpenEvent(mid, time.time(), ip, ua, "GET")], classifier(self_ips))


def notice_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(webhook_deliveries).where(webhook_deliveries.c.target.is_not(None)).order_by("id")
        ).all()


def deliverer(engines: tuple[Engine, Engine], config: NoticeConfig) -> Deliverer:
    return Deliverer(engines[0], engines[1], Policy(backoff=0.05, notices=config))


# --- which opens make a notice ---------------------------------------------------------------------------


def test_only_the_first_human_open_makes_a_notice(engines: tuple[Engine, Engine]) -> None:
    _, writer = engines
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="The proposal", notify=notices.EACH)
        plain = create_message(conn, recipient="bob@example.com", subject="No notice")
    open_at(writer, mid, *APPLE_PREFETCH)
    open_at(writer, mid, SELF_IP, THUNDERBIRD, self_ips=SELF_IP)  # the sender's own reading
    open_at(writer, plain, HOME_IP, THUNDERBIRD)
    assert notice_rows(writer) == []
    open_at(writer, mid, HOME_IP, THUNDERBIRD)
    rows = notice_rows(writer)
    assert [(r.event, r.target, r.webhook_id) for r in rows] == [("read", "email", 0), ("read", "url", 0)]
    payload = json.loads(rows[0].payload)
    assert payload["message_id"] == mid and payload["client"] == "Thunderbird" and payload["country"] == "GB"
    assert payload["kind"] == "human"
    open_at(writer, mid, HOME_IP, THUNDERBIRD)  # a second open
    assert len(notice_rows(writer)) == 2
    with writer.connect() as conn:
        marked = conn.execute(select(messages.c.read_notice_at).where(messages.c.id == mid)).scalar()
        human = conn.execute(select(messages.c.human_open_count).where(messages.c.id == mid)).scalar()
    assert marked == pytest.approx(json.loads(rows[0].payload)["at"]) and human == 2


def test_a_notice_by_email_names_recipient_subject_client_and_place(
    engines: tuple[Engine, Engine],
    smtp: SMTPServerHandle,
) -> None:
    _, writer = engines
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="The proposal", notify=notices.EACH)
    open_at(writer, mid, HOME_IP, THUNDERBIRD)
    config = NoticeConfig.from_settings(load_settings(notify_email="me@example.com", data_dir="."))
    worker = deliverer(engines, config)
    try:
        worker.drain()
    finally:
        worker.close()
    (mail,) = smtp.sink.messages
    message = mail.message
    assert mail.rcpt_tos == ["me@example.com"] and message["To"] == "me@example.com"
    assert message["Subject"] == "ann@example.com read “The proposal”"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_content()
    assert "Client: Thunderbird, Windows, desktop" in text and "From: GB (Andrews & Arnold Ltd" in text
    assert f"/messages/{mid}" in text
    statuses = sorted((r.target, r.status) for r in notice_rows(writer))
    assert statuses == [("email", "delivered"), ("url", "skipped")]  # no URL configured: nothing sent there


def test_click_notices_only_when_asked(engines: tuple[Engine, Engine], receiver: Receiver) -> None:
    _, writer = engines
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="Deck", notify=notices.EACH)
        save_links(conn, [(mid, ["https://example.com/deck"])])
    with writer.begin() as conn:  # a reader's click, long after the send (an instant one is a scanner's)
        later = time.time() + 600
        write_clicks(conn, [ClickEvent(mid, 0, later, HOME_IP, THUNDERBIRD, "GET")], CLASSIFIER.clicks)
    for clicks, expected in ((False, 0), (True, 1)):
        with writer.begin() as conn:
            conn.execute(webhook_deliveries.update().values(status="pending", next_attempt_at=0))
        worker = deliverer(engines, NoticeConfig(url=receiver.url_for("/topic"), clicks=clicks))
        worker.drain()
        worker.close()
        assert len(receiver.hits) == expected
    body = json.loads(receiver.hits[0].body)
    assert body["type"] == "click" and body["link"] == {"number": 0, "url": "https://example.com/deck"}


def test_a_click_notice_waits_and_is_withdrawn_when_the_click_proves_a_machines(
    engines: tuple[Engine, Engine], receiver: Receiver
) -> None:
    """A click notice is held like a click webhook; the same address then fetching the hidden link shows
    the click to be a gateway's, and the notice is finished as skipped before anyone is told."""
    _, writer = engines
    rules = CLASSIFIER.clicks
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="Deck", notify=notices.EACH)
        save_links(conn, [(mid, ["https://example.com/deck"])])
    later = time.time() + 600
    with writer.begin() as conn:
        write_clicks(conn, [ClickEvent(mid, 0, later, HOME_IP, THUNDERBIRD, "GET")], rules)
    rows = [r for r in notice_rows(writer) if r.event == "click"]
    assert len(rows) == 2 and all(r.status == "pending" for r in rows)
    with writer.connect() as conn:
        due = conn.execute(
            select(webhook_deliveries.c.next_attempt_at).where(webhook_deliveries.c.event == "click")
        )
        assert all(at >= time.time() + rules.settle - 5 for (at,) in due)  # held, not due at once
    with writer.begin() as conn:
        write_clicks(conn, [ClickEvent(mid, HIDDEN_LINK, later + 1, HOME_IP, THUNDERBIRD, "GET")], rules)
    assert [r.status for r in notice_rows(writer) if r.event == "click"] == ["skipped", "skipped"]
    worker = deliverer(engines, NoticeConfig(url=receiver.url_for("/topic"), clicks=True))
    worker.drain()
    worker.close()
    assert receiver.hits == []


# --- push/chat formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.slack.com/services/T0/B0/x", "slack"),
        ("https://discord.com/api/webhooks/1/abc", "discord"),
        ("https://api.telegram.org/bot123:abc/sendMessage?chat_id=42", "telegram"),
        ("https://matrix.example.org/_matrix/client/v3/rooms/!r:example.org/send/m.room.message", "matrix"),
        ("https://ntfy.sh/my-topic", "ntfy"),
        ("https://ntfy.example.net/alerts", "ntfy"),
        ("http://192.168.1.5:8080/hook", "json"),
    ],
)
def test_the_format_follows_the_url(url: str, expected: str) -> None:
    assert detect_format(url) == expected
    assert url_format(url + "#format=slack", "auto") == (url, "slack")  # the fragment names it, is not sent
    assert url_format(url, "discord") == (url, "discord")  # the setting wins


NOTICE = Notice(
    "read", "ab" * 16, "ann@example.com read “Über”", "ann@example.com read “Über”\nClient: Thunderbird",
    {"type": "read", "message_id": "m1", "recipient": "ann@example.com", "subject": "Über"},
)  # fmt: skip


@pytest.mark.parametrize("fmt", ["ntfy", "slack", "discord", "matrix", "telegram", "json"])
def test_each_format_gets_the_body_its_service_reads(fmt: str, receiver: Receiver) -> None:
    path = (
        "/bot1:x/sendMessage?chat_id=42"
        if fmt == "telegram"
        else "/_matrix/send/m.room.message?access_token=t"
    )
    notifier = Notifier(NoticeConfig(base_url="https://track.example.com"))
    try:
        outcome = notifier.send(NOTICE, Destination("url", receiver.url_for(path), fmt))
    finally:
        notifier.close()
    assert outcome.ok, outcome
    (hit,) = receiver.hits
    if fmt == "ntfy":
        assert hit.method == "POST" and hit.body.decode() == NOTICE.text
        assert hit.headers["Title"].startswith("=?utf-8?") and hit.headers["Tags"] == "eyes"
        assert hit.headers["Click"] == "https://track.example.com/messages/m1"
        return
    body = json.loads(hit.body)
    assert hit.headers["content-type"] == "application/json"
    if fmt == "slack":
        assert body == {"text": NOTICE.text}
    elif fmt == "discord":
        assert body == {"content": NOTICE.text, "allowed_mentions": {"parse": []}}
    elif fmt == "telegram":
        assert body == {"chat_id": "42", "text": NOTICE.text} and hit.path == path
    elif fmt == "matrix":
        assert hit.method == "PUT" and body == {"msgtype": "m.text", "body": NOTICE.text}
        assert hit.path == f"/_matrix/send/m.room.message/{NOTICE.event_id}?access_token=t"
    else:
        assert body["recipient"] == "ann@example.com" and body["subject"] == "Über" and body["text"]


def test_a_receiver_that_fails_is_tried_again_and_a_timeout_is_a_failure(
    engines: tuple[Engine, Engine],
) -> None:
    _, writer = engines
    with writer.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="S", notify=notices.EACH)
    open_at(writer, mid, HOME_IP, THUNDERBIRD)
    worker = deliverer(engines, NoticeConfig(url="http://127.0.0.1:9/nothing-listens", timeout=0.5))
    worker.run_once()
    worker.close()
    row = next(r for r in notice_rows(writer) if r.target == "url")
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "could not connect")


# --- the outbox: once, across restarts and servers -------------------------------------------------------


@pytest.mark.slow
def test_apple_prefetch_sends_nothing_then_the_first_read_one_email_and_a_second_none(
    server_factory: type[Server],
    env: dict[str, str],
    smtp: SMTPServerHandle,
) -> None:
    """The evidence: a real server, a real SMTP server; the notice leaves within 10 s of the open."""
    env.update({"DEADPIXEL_NOTIFY_EMAIL": "me@example.com", "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1"})
    made = deadpixel("pixel", "new", "--to", "ann@example.com", "--subject", "The proposal", "--notify",
                     "--json", env=env, check=True)  # fmt: skip
    url = json.loads(made.stdout)["url"].replace(load_settings(env).base_url, "")
    server = server_factory(env=dict(env)).start()
    sink = smtp.sink

    def fetch(ip: str, ua: str) -> None:
        headers = {"x-forwarded-for": ip, "user-agent": ua}
        assert httpx.get(server.url + url, headers=headers).status_code == 200

    fetch(*APPLE_PREFETCH)
    time.sleep(2.5)  # the deliverer looks every second: a notice would be here by now
    assert sink.messages == []
    opened = time.monotonic()
    fetch(HOME_IP, THUNDERBIRD)
    while not sink.messages:
        assert time.monotonic() - opened < 10, "no notice within 10 s of the open"
        time.sleep(0.05)
    took = time.monotonic() - opened
    fetch(HOME_IP, THUNDERBIRD)
    time.sleep(2.5)
    (mail,) = sink.messages
    assert mail.rcpt_tos == ["me@example.com"]
    message = mail.message
    assert "ann@example.com" in message["Subject"] and "The proposal" in message["Subject"]
    assert "Thunderbird" in message.get_content()
    print(f"notice arrived {took:.2f} s after the open")
    server.stop()


@pytest.mark.slow
def test_a_notice_written_before_a_restart_is_sent_once_by_two_servers(
    server_factory: type[Server],
    env: dict[str, str],
    settings: Settings,
    smtp: SMTPServerHandle,
) -> None:
    """The open is committed with its notice rows while no server runs (as if it died before delivering);
    two servers on the same store then start together, and exactly one email leaves."""
    env["DEADPIXEL_NOTIFY_EMAIL"] = "me@example.com"
    deadpixel("store", "migrate", env=env)
    engine = create_engine(settings.database_url, writer=True)
    with engine.begin() as conn:
        mid = create_message(conn, recipient="ann@example.com", subject="Restart", notify=notices.EACH)
    open_at(engine, mid, HOME_IP, THUNDERBIRD)
    engine.dispose()
    first = server_factory(env=dict(env), workers=2).start()
    second = server_factory(env=dict(env)).start()
    deadline = time.monotonic() + 10
    while not smtp.sink.messages:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.5)
    assert len(smtp.sink.messages) == 1
    first.stop()
    second.stop()


# --- digests ----------------------------------------------------------------------------------------------


def test_a_digest_campaign_gets_one_summary_a_day(engines: tuple[Engine, Engine], receiver: Receiver) -> None:
    _, writer = engines
    with writer.begin() as conn:
        cid = campaign_id(conn, "launch", create=True)
        assert cid is not None
        notices.set_campaign_mode(conn, cid, notices.DIGEST, now=time.time() - 100)
        ids = [create_message(conn, recipient=f"r{n}@example.com", subject="Launch", campaign="launch")
               for n in range(3)]  # fmt: skip
    for mid in ids[:2]:
        open_at(writer, mid, HOME_IP, THUNDERBIRD)
    assert notice_rows(writer) == []  # no notice per read in digest mode
    with writer.begin() as conn:
        assert notices.make_digests(conn, time.time()) == 0  # the day is not over
        assert notices.make_digests(conn, time.time() + 86400) == 1
        assert notices.make_digests(conn, time.time() + 86400 + 5) == 0  # made once
    worker = deliverer(engines, NoticeConfig(url=receiver.url_for("/topic")))
    worker.drain()
    worker.close()
    (hit,) = receiver.hits
    body = json.loads(hit.body)
    assert body["type"] == "digest" and body["campaign"] == "launch"
    assert sorted(r["recipient"] for r in body["reads"]) == ["r0@example.com", "r1@example.com"]


# --- the ways to ask for a notice --------------------------------------------------------------------------


def test_pixel_new_and_campaign_modes(env: dict[str, str], settings: Settings) -> None:
    made = deadpixel("pixel", "new", "--to", "a@example.com", "--notify", "--json", env=env, check=True)
    plain = deadpixel("pixel", "new", "--to", "b@example.com", "--json", env=env, check=True)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        modes = dict(conn.execute(select(messages.c.recipient, messages.c.notify)).all())
    engine.dispose()
    assert modes == {"a@example.com": notices.EACH, "b@example.com": notices.OFF}
    assert json.loads(made.stdout)["message_id"] != json.loads(plain.stdout)["message_id"]


def test_the_relay_header_sets_the_flag_and_never_leaves() -> None:
    raw = (b"From: me@example.com\r\nTo: ann@example.com\r\nSubject: Deal\r\nX-Deadpixel-Notify: yes\r\n"
           b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n")  # fmt: skip
    submitted = parse(raw)
    assert submitted.notify and b"x-deadpixel" not in submitted.outgoing.lower()
    assert not parse(raw.replace(b"X-Deadpixel-Notify: yes", b"X-Deadpixel-Notify: no")).notify


def test_a_relayed_message_with_the_header_wants_a_notice(engines: tuple[Engine, Engine]) -> None:
    _, writer = engines
    with writer.begin() as conn:
        (with_header,) = claim(conn, key="k1", account="me", addresses=["ann@example.com"], campaign="me",
                               subject="Deal", untracked=None, notify=True)  # fmt: skip
        (without,) = claim(conn, key="k2", account="me", addresses=["bob@example.com"], campaign="me",
                           subject="Deal", untracked=None)  # fmt: skip
        modes = dict(conn.execute(select(messages.c.id, messages.c.notify)).all())
    assert modes == {with_header.message_id: notices.EACH, without.message_id: notices.OFF}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as test_client:
        yield test_client


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_the_new_pixel_page_has_the_checkbox(client: TestClient, settings: Settings) -> None:
    assert sign_in(client) == 303
    page = client.get("/pixels/new").text
    assert '<input type="checkbox" name="notify" value="yes"> Tell me when they read it' in page
    form = {"csrf": _csrf(page), "to": "ann@example.com", "subject": "Deal", "notify": "yes"}
    assert client.post("/pixels/new", data=form).status_code == 200
    assert client.post("/pixels/new", data={**form, "csrf": "forged"}).status_code == 403
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.notify)).scalars().all() == [notices.EACH]
    engine.dispose()


def test_the_settings_page_saves_where_notices_go(client: TestClient, settings: Settings) -> None:
    assert sign_in(client) == 303
    page = client.get("/settings").text
    assert 'id="notify-settings"' in page and 'name="url"' in page and "DEADPIXEL_NOTIFY_EMAIL" in page
    form = {
        "csrf": _csrf(page),
        "email": "me@example.com",
        "url": "http://192.168.1.5/alerts",
        "format": "ntfy",
    }
    saved = client.post("/settings/notices", data=form)
    assert saved.status_code == 200 and "Read notice settings saved" in saved.text
    assert 'value="http://192.168.1.5/alerts"' in saved.text  # a private address: the operator's choice
    assert client.post("/settings/notices", data={**form, "url": "ftp://x"}).status_code == 400
    assert client.post("/settings/notices", data={**form, "email": "nobody"}).status_code == 400
    assert client.post("/settings/notices", data={**form, "csrf": "forged"}).status_code == 403
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(select(notify_settings.c.name, notify_settings.c.value)).all())
    engine.dispose()
    assert stored == {"email": "me@example.com", "url": "http://192.168.1.5/alerts", "format": "ntfy"}
    config = NoticeConfig(email="env@example.com")
    assert notices_destination("url", config, stored) == Destination(
        "url", "http://192.168.1.5/alerts", "ntfy"
    )


def notices_destination(channel: str, config: NoticeConfig, stored: dict[str, str]) -> Destination | None:
    from deadpixel.hooks.notify import destination

    return destination(channel, config, stored)


def test_notify_settings_have_defaults_and_clear_errors() -> None:
    settings = load_settings({}, data_dir=".")
    assert (settings.notify_email, settings.notify_url, settings.notify_format, settings.notify_clicks) == (
        None, None, "auto", False,
    )  # fmt: skip
    for name, bad in [
        ("EMAIL", "not an address"),
        ("URL", "ftp://x"),
        ("FORMAT", "pager"),
        ("CLICKS", "maybe"),
    ]:
        with pytest.raises(ConfigError, match=f"DEADPIXEL_NOTIFY_{name}"):
            load_settings({f"DEADPIXEL_NOTIFY_{name}": bad}, data_dir=".")
    assert load_settings({"DEADPIXEL_NOTIFY_URL": "http://127.0.0.1:8080/t"}, data_dir=".").notify_url
