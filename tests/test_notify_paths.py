"""Read notices asked for the ways a user asks: ``deadpixel campaign send --notify`` (and ``--digest``) to a
real SMTP server, and ``X-Deadpixel-Notify: yes`` through the real relay; then a reader's open of the pixel,
served by the real app in process, queues exactly one notice, which the app's own deliverer emails."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings, load_settings
from deadpixel.hooks.deliver import Deliverer, Policy
from deadpixel.hooks.notify import NoticeConfig
from deadpixel.server.app import Deadpixel
from deadpixel.server.start import prepare
from deadpixel.store import notices
from deadpixel.store.db import create_engine
from deadpixel.store.schema import messages, webhook_deliveries
from deadpixel.web.settings import masked_url

from .helpers import deadpixel
from .smtp_sink import Received, Sink, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_dashboard import sign_in
from .test_relay import PASSWORD, RunningRelay, message, start_relay, submit

THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
HOME_IP = "81.2.69.160"  # a UK broadband address: a reader at home
NOTICE_TO = "me@example.com"
PIXEL_PATH = re.compile(r"/o/[0-9a-v]{32}\.gif")
LIST = "email,first_name\nann@example.org,Ann\nbob@example.org,Bob\ncarol@example.org,Carol\n"


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    """Notices by email (asked for before ``settings`` is read, so the app's deliverer sends them)."""
    monkeypatch.setenv("DEADPIXEL_NOTIFY_EMAIL", NOTICE_TO)
    monkeypatch.setenv("DEADPIXEL_WEBHOOK_BACKOFF", "0.1")  # the deliverer looks at the outbox this often
    return NOTICE_TO


@pytest.fixture
def upstream() -> Iterator[SMTPServerHandle]:
    """The relay's upstream: a real SMTP server that keeps what it is handed."""
    handle = SMTPServerHandle(Sink()).start()
    yield handle
    handle.stop()


@pytest.fixture
def relay(settings: Settings, engine: Engine, upstream: SMTPServerHandle) -> Iterator[RunningRelay]:
    """The relay on loopback, as ``deadpixel relay`` serves it, for the account alice."""
    with engine.begin() as conn:
        create_user(conn, "alice", PASSWORD)
    running = start_relay(settings, upstream.port)
    yield running
    running.stop()


def read_notices(engine: Engine) -> list[tuple[str, str]]:
    """(event, event id) of each queued notice: one per notice, whatever its channels."""
    d = webhook_deliveries.c
    with engine.connect() as conn:
        found = conn.execute(
            select(d.event, d.event_id).where(d.webhook_id == notices.NOTICE_WEBHOOK).distinct()
        ).all()
    return sorted((event, event_id) for event, event_id in found)


def sent_an_hour_ago(engine: Engine) -> None:
    """The reader opens an hour after the send (an open seconds after it is a scanner's, rightly)."""
    with engine.begin() as conn:
        conn.execute(update(messages).values(sent_at=func.coalesce(messages.c.sent_at, 0) - 3600))


def pixel_of(mail: Received) -> str:
    found = PIXEL_PATH.findall(mail.html())
    assert len(found) == 1, found
    return str(found[0])


def open_pixels(settings: Settings, paths: list[str], wait_for: SMTPServerHandle | None = None) -> None:
    """A reader at home opens each pixel, through the whole app; with ``wait_for``, the app stays up until
    its deliverer has handed a mail to that SMTP server (or 10 s have passed)."""
    app = Deadpixel(load_settings())
    with TestClient(app, client=(HOME_IP, 40000)) as reader:
        before = len(wait_for.sink.messages) if wait_for else 0
        for path in paths:
            answer = reader.get(path, headers={"user-agent": THUNDERBIRD})
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"
        deadline = time.monotonic() + 10
        while wait_for is not None and len(wait_for.sink.messages) == before:
            assert time.monotonic() < deadline, "no notice within 10 s of the open"
            time.sleep(0.05)


def campaign_send(tmp_path: Path, name: str, *flags: str) -> dict[str, object]:
    recipients = tmp_path / f"{name}.csv"
    recipients.write_text(LIST, encoding="utf-8")
    html = tmp_path / f"{name}.html"
    html.write_text("<html><body><p>Hello {{ first_name }}</p></body></html>", encoding="utf-8")
    ran = deadpixel(
        "campaign", "send", name, "--recipients", str(recipients), "--subject", "Launch for {{ first_name }}",
        "--html", str(html), "--json", *flags, check=True,
    )  # fmt: skip
    summary = json.loads(ran.stdout)
    assert summary["sent"] == 3, summary
    return dict(summary)


def test_campaign_send_notify_tells_of_a_first_read_once(
    notify_env: str, smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    campaign_send(tmp_path, "launch", "--notify")
    sent = smtp.sink.by_recipient()
    with engine.connect() as conn:
        modes = set(conn.execute(select(messages.c.notify)).scalars())
    assert modes == {notices.EACH}
    sent_an_hour_ago(engine)
    ann = pixel_of(sent["ann@example.org"][0])
    open_pixels(settings, [ann], wait_for=smtp)
    assert [event for event, _ in read_notices(engine)] == ["read"]
    (notice,) = [m for m in smtp.sink.messages if m.rcpt_tos == [NOTICE_TO]]
    assert notice.message["Subject"] == "ann@example.org read “Launch for Ann”"
    text = notice.message.get_content()
    assert "Campaign: launch" in text and "Client: Thunderbird" in text

    open_pixels(settings, [ann, pixel_of(sent["bob@example.org"][0])])  # Ann again, and Bob's first read
    assert [event for event, _ in read_notices(engine)] == ["read", "read"]
    with engine.connect() as conn:
        marked = dict(conn.execute(select(messages.c.recipient, messages.c.read_notice_at)).all())
    assert marked["ann@example.org"] and marked["bob@example.org"] and marked["carol@example.org"] is None


def test_campaign_send_notify_digest_sums_up_the_day(
    notify_env: str, smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    campaign_send(tmp_path, "digest", "--notify", "--digest")
    sent = smtp.sink.by_recipient()
    sent_an_hour_ago(engine)
    open_pixels(settings, [pixel_of(sent[who][0]) for who in ("ann@example.org", "carol@example.org")])
    assert read_notices(engine) == []  # no notice per read in digest mode
    worker = Deliverer(engine, engine, Policy(backoff=0.05, notices=NoticeConfig.from_settings(settings)))
    try:
        assert worker.digests(now=time.time() + 600) == 0  # the campaign's day is not over
        worker = Deliverer(engine, engine, worker.policy)  # (a deliverer looks once a minute)
        assert worker.digests(now=time.time() + notices.DIGEST_PERIOD + 1) == 1
        worker.drain()
    finally:
        worker.close()
    assert [event for event, _ in read_notices(engine)] == ["digest"]
    (digest,) = [m for m in smtp.sink.messages if m.rcpt_tos == [NOTICE_TO]]
    assert digest.message["Subject"].startswith("2 read “digest” since ")
    text = digest.message.get_content()
    assert "ann@example.org" in text and "carol@example.org" in text and "bob@example.org" not in text


def test_a_relayed_message_asking_for_a_notice_makes_one(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings, engine: Engine
) -> None:
    raw = message(b"X-Deadpixel-Notify: yes\r\n")
    submit(settings, relay.port, raw, ["bob@example.org"])
    (copy,) = upstream.sink.messages
    assert b"X-Deadpixel-Notify: yes" in raw and b"x-deadpixel" not in copy.content.lower()
    with engine.connect() as conn:
        (stored,) = conn.execute(select(messages.c.recipient, messages.c.notify)).all()
    assert tuple(stored) == ("bob@example.org", notices.EACH)
    sent_an_hour_ago(engine)
    pixel = pixel_of(copy)
    open_pixels(settings, [pixel])
    assert [event for event, _ in read_notices(engine)] == ["read"]
    open_pixels(settings, [pixel])
    assert len(read_notices(engine)) == 1


def test_a_relayed_message_without_the_header_makes_none(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings, engine: Engine
) -> None:
    submit(settings, relay.port, message(), ["bob@example.org"])
    (copy,) = upstream.sink.messages
    sent_an_hour_ago(engine)
    open_pixels(settings, [pixel_of(copy)])
    assert read_notices(engine) == []


SECRET_URL = "https://bot:hunter2@api.telegram.org/bot123:SECRET-TOKEN/sendMessage?chat_id=42#format=telegram"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_settings_page_lists_notify_settings_without_their_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in {"EMAIL": NOTICE_TO, "URL": SECRET_URL, "FORMAT": "auto", "CLICKS": "true"}.items():
        monkeypatch.setenv(f"DEADPIXEL_NOTIFY_{name}", value)
    settings = load_settings()
    prepare(settings)
    store = create_engine(settings.database_url, writer=True)
    with store.begin() as conn:
        create_user(conn, "ann", "correct horse")
    store.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as dashboard:
        assert sign_in(dashboard) == 303
        page = dashboard.get("/settings").text
    table = page.split('id="config"', 1)[1].split("</table>", 1)[0]
    rows = {what: value for what, value in re.findall(r"<tr><td>([^<]+)</td><td><code>([^<]*)</code>", table)}
    assert rows["Read notices by email"] == NOTICE_TO
    assert rows["Read notices to a URL"] == "https://api.telegram.org/…"
    assert rows["Notice URL format"] == "auto: telegram"
    assert rows["Notices of clicks"] == "every human click too"
    for secret in ("SECRET-TOKEN", "hunter2", "chat_id", "bot123"):
        assert secret not in page  # neither in the table nor as the form's placeholder


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ntfy.sh/my-secret-topic", "https://ntfy.sh/…"),
        ("http://192.168.1.5:8080/alerts", "http://192.168.1.5:8080/…"),
        ("http://[::1]:2586/t?auth=x", "http://[::1]:2586/…"),
        ("https://ntfy.example.net/", "https://ntfy.example.net"),
        ("https://hooks.slack.com/services/T0/B0/x#format=slack", "https://hooks.slack.com/…"),
    ],
)
def test_a_notify_url_is_shown_without_path_query_or_credentials(url: str, shown: str) -> None:
    assert masked_url(url) == shown
