"""Bounces over real SMTP: the listener for the bounce domain, the VERP senders of campaigns and the relay.

The full loop runs here: a campaign goes to a real SMTP server, a bounce comes back to the listener at the
envelope sender the campaign used, the report shows it, and the next campaign skips the address.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deadpixel.accounts.users import create_user
from deadpixel.bounces.listener import BounceListener
from deadpixel.bounces.verp import message_for
from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import suppress

from . import bounce_samples as samples
from .helpers import deadpixel
from .smtp_sink import HOST, Sink, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_relay import PASSWORD, client_tls, start_relay
from .test_relay import message as relay_message

DOMAIN = "bounces.example.com"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class RunningListener:
    """The listener on its own event loop in a thread, as `deadpixel bounces listen` runs it in a process."""

    def __init__(self, settings: Settings) -> None:
        self.listener = BounceListener(settings, host=HOST, port=0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningListener:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def send(self, rcpt: str, raw: bytes) -> tuple[int, bytes]:
        """One SMTP transaction from the null sender, as a bounce comes; (code, reply) of the last step."""
        with smtplib.SMTP(HOST, self.listener.port, timeout=10) as client:
            client.ehlo("mx.receiver.example")
            client.mail("<>")
            code, reply = client.rcpt(rcpt)
            if code != 250:
                return code, reply
            return client.data(raw)


@pytest.fixture
def bounce_settings(settings: Settings) -> Settings:
    return replace(settings, bounce_domain=DOMAIN, bounce_max_size=64 * 1024)


@pytest.fixture
def listener(bounce_settings: Settings) -> Iterator[RunningListener]:
    with RunningListener(bounce_settings) as running:
        yield running


def signer(settings: Settings) -> TokenSigner:
    return TokenSigner(load_or_create_keys(settings.keys_file))


def rows(settings: Settings, table: Any) -> list[Any]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        found = list(conn.execute(select(table)))
    engine.dispose()
    return found


@pytest.mark.slow
def test_a_campaign_bounce_comes_back_and_the_next_campaign_skips_the_address(
    tmp_path: Path, smtp: SMTPServerHandle, bounce_settings: Settings, listener: RunningListener
) -> None:
    verp_env = {"DEADPIXEL_BOUNCE_DOMAIN": DOMAIN}
    (tmp_path / "list.csv").write_text("email\nann@example.org\nbob@example.org\ncy@example.org\n")
    (tmp_path / "mail.html").write_text("<p>Hello</p>")
    args = [
        "--recipients",
        str(tmp_path / "list.csv"),
        "--subject",
        "Hi",
        "--html",
        str(tmp_path / "mail.html"),
    ]
    first = deadpixel("campaign", "send", "spring", *args, "--json", env=verp_env)
    assert first.returncode == 0, first.stderr

    ids = {row.recipient: row.id for row in rows(bounce_settings, messages)}
    senders = {copy.rcpt_tos[0]: copy.mail_from for copy in smtp.sink.messages}
    for recipient, mail_from in senders.items():
        assert mail_from.startswith("bounces+") and mail_from.endswith("@" + DOMAIN)
        assert message_for(signer(bounce_settings), mail_from, DOMAIN) == ids[recipient]
        assert "example.org" not in mail_from.split("@")[0]  # nothing about the recipient in it
    assert {str(copy.message["From"]) for copy in smtp.sink.messages} == {"News <news@example.com>"}

    code, reply = listener.send(
        senders["ann@example.org"], samples.dsn(senders["ann@example.org"], "ann@example.org")
    )
    assert code == 250, reply
    figures = json.loads(deadpixel("report", "spring", "--json").stdout)
    assert (figures["sent"], figures["bounced"], figures["delivered"]) == (3, 1, 2)
    assert figures["bounce_rate"] == 1 / 3
    text = deadpixel("report", "spring").stdout
    assert "bounced          1  (33.3% of sent)" in text and "delivered        2" in text
    assert "% of delivered)" in text
    listed = json.loads(deadpixel("suppression", "list", "--json").stdout)
    assert [(row["address"], row["source"], row["campaign"]) for row in listed] == [
        ("ann@example.org", "hard-bounce", "spring")
    ]

    second = deadpixel("campaign", "send", "summer", *args, "--json", env=verp_env)
    summary = json.loads(second.stdout)
    assert (summary["sent"], summary["suppressed"]) == (2, 1)
    assert [p["value"] for p in summary["problems"] if p["kind"] == "suppressed"] == ["ann@example.org"]
    assert len(smtp.sink.by_recipient()["ann@example.org"]) == 1


@pytest.mark.slow
def test_without_a_bounce_domain_the_sender_is_unchanged(tmp_path: Path, smtp: SMTPServerHandle) -> None:
    (tmp_path / "mail.html").write_text("<p>Hello</p>")
    sent = deadpixel(
        "send", "--to", "ann@example.org", "--subject", "Hi", "--html", str(tmp_path / "mail.html")
    )
    assert sent.returncode == 0, sent.stderr
    assert [copy.mail_from for copy in smtp.sink.messages] == ["news@example.com"]


@SQLITE_ONLY
def test_a_single_send_gets_a_verp_sender_too(
    tmp_path: Path, smtp: SMTPServerHandle, settings: Settings
) -> None:
    (tmp_path / "mail.html").write_text("<p>Hello</p>")
    sent = deadpixel(
        "send", "--to", "ann@example.org", "--subject", "Hi", "--html", str(tmp_path / "mail.html"),
        env={"DEADPIXEL_BOUNCE_DOMAIN": DOMAIN},
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    (row,) = rows(settings, messages)
    (copy,) = smtp.sink.messages
    assert message_for(signer(settings), copy.mail_from, DOMAIN) == row.id


@SQLITE_ONLY
def test_the_listener_takes_mail_only_for_genuine_bounce_addresses(
    listener: RunningListener, bounce_settings: Settings
) -> None:
    from deadpixel.bounces.verp import bounce_address
    from deadpixel.store.messages import create_message

    engine = create_engine(bounce_settings.database_url)
    with engine.begin() as conn:
        ann = create_message(conn, recipient="ann@example.org", campaign="spring", sent_at=1.0)
    engine.dispose()
    genuine = bounce_address(signer(bounce_settings), ann, DOMAIN)
    start = len("bounces+")
    forged = genuine[:start] + ("0" if genuine[start] != "0" else "1") + genuine[start + 1 :]
    others = ("postmaster@other.example", "postmaster.x@" + DOMAIN, "ann@example.org")
    for rcpt in (forged, genuine.replace(DOMAIN, "other.example"), *others):
        code, reply = listener.send(rcpt, samples.dsn(genuine, "ann@example.org"))
        assert code == 550, (rcpt, reply)
    with smtplib.SMTP(HOST, listener.listener.port, timeout=10) as client:
        client.ehlo("mx.receiver.example")
        assert b"SIZE 65536" in (client.ehlo_resp or b"")
        client.mail("<>")
        assert client.rcpt(genuine)[0] == 250
        assert client.rcpt(genuine.upper())[0] == 452  # one report, one message
        client.rset()
        client.mail("<>")
        client.rcpt(genuine)
        code, _ = client.data(samples.dsn(genuine, "ann@example.org") + (b"x" * 70 + b"\r\n") * 1000)
        assert code == 552  # past DEADPIXEL_BOUNCE_MAX_SIZE: refused, nothing stored
        client.rset()
        client.mail("<>")
        client.rcpt(genuine)
        assert client.data(b"Subject: hello\r\n\r\nnot a report at all\r\n")[0] == 250  # accepted, ignored
        client.mail("<>")
        client.rcpt(genuine)
        assert client.data(samples.auto_reply(genuine))[0] == 250
    assert rows(bounce_settings, bounces) == []
    code, _ = listener.send(genuine, samples.dsn(genuine, "ann@example.org"))
    assert code == 250
    assert [(row.kind, row.status, row.source) for row in rows(bounce_settings, bounces)] == [
        ("hard", "5.1.1", "smtp")
    ]


def test_postmaster_is_accepted_logged_and_not_kept(
    listener: RunningListener, bounce_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5321 4.5.1: every SMTP server takes mail for postmaster, bare or at its domain."""
    note = b"From: admin@mx.receiver.example\r\nSubject: your bounce host\r\n\r\nhello postmaster\r\n"
    with caplog.at_level("WARNING", logger="deadpixel.bounces.listener"):
        for rcpt in ("postmaster@" + DOMAIN, "PostMaster@" + DOMAIN.upper(), "postmaster", "<postmaster>"):
            with smtplib.SMTP(HOST, listener.listener.port, timeout=10) as client:
                client.ehlo("mx.receiver.example")
                assert client.mail("admin@mx.receiver.example")[0] == 250
                assert client.docmd("RCPT TO:" + (rcpt if rcpt.startswith("<") else f"<{rcpt}>"))[0] == 250
                assert client.rcpt("postmaster")[0] == 452  # one recipient per message, as for bounces
                assert client.data(note)[0] == 250
    logged = [r.getMessage() for r in caplog.records if "postmaster" in r.getMessage()]
    assert len(logged) == 4 and all("'your bounce host'" in line for line in logged), logged
    assert rows(bounce_settings, bounces) == []  # logged, not recorded as a report


@SQLITE_ONLY
def test_the_relay_refuses_suppressed_recipients_and_sends_with_verp(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "alice", PASSWORD)
        suppress(conn, "carol@example.net", "hard-bounce")
    engine.dispose()
    upstream = SMTPServerHandle(Sink()).start()
    running = start_relay(replace(settings, bounce_domain=DOMAIN), upstream.port)
    try:
        with smtplib.SMTP(HOST, running.port, timeout=10) as client:
            client.starttls(context=client_tls(settings))
            client.login("alice", PASSWORD)
            refused = client.sendmail(
                "alice@example.com", ["bob@example.org", "Carol@example.net"], relay_message()
            )
    finally:
        running.stop()
        upstream.stop()
    assert list(refused) == ["Carol@example.net"] and refused["Carol@example.net"][0] == 550
    assert b"suppression list" in refused["Carol@example.net"][1]
    (copy,) = upstream.sink.messages
    assert copy.rcpt_tos == ["bob@example.org"]
    (row,) = rows(settings, messages)
    assert message_for(signer(settings), copy.mail_from, DOMAIN) == row.id
