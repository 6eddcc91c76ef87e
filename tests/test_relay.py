"""The relay with real parts: smtplib (and swaks) -> the relay on loopback -> a real aiosmtpd upstream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from deadpixel.accounts.users import SIGN_IN_TRIES, create_user
from deadpixel.config import Settings
from deadpixel.mail.compose import PIXEL_TEMPLATE
from deadpixel.mail.smtp import SMTPSettings
from deadpixel.relay.auth import is_loopback
from deadpixel.relay.reply import Failure, client_reply
from deadpixel.relay.server import AUTH_TRIES, Relay
from deadpixel.relay.tls import GENERATED_NAME
from deadpixel.reports import analytics
from deadpixel.store.db import create_engine
from deadpixel.store.links import link_url
from deadpixel.store.maintenance import forget_recipient
from deadpixel.store.roles import Role
from deadpixel.store.schema import campaigns, messages, opens, relayed

from . import forkserver
from .conftest import Server, free_port
from .helpers import deadpixel
from .smtp_sink import HOST, Sink, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

PASSWORD = "correct horse battery"
PIXEL = re.compile(r'<div style="[^"]*"><img src="([^"]+/o/([0-9a-v]{32})\.gif)"[^>]*></div>')
# What these tests check does not depend on the database; the others run on both.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class RunningRelay:
    """The relay served by its own event loop on a thread, as `deadpixel relay` serves it in a process."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> RunningRelay:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.relay.start(), self.loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.relay.port


@pytest.fixture
def upstream() -> Iterator[SMTPServerHandle]:
    handle = SMTPServerHandle(Sink()).start()
    yield handle
    handle.stop()


def upstream_settings(port: int) -> SMTPSettings:
    return SMTPSettings(
        host=HOST, port=port, username=None, password=None, tls="none", timeout=5, local_hostname="relay.test"
    )


@pytest.fixture
def account(settings: Settings) -> str:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "alice", PASSWORD)
    engine.dispose()
    return "alice"


def start_relay(settings: Settings, port: int, *, loopback: bool | None = None) -> RunningRelay:
    return RunningRelay(
        Relay(settings, upstream_settings(port), host=HOST, port=0, loopback=loopback)
    ).start()


@pytest.fixture
def relay(settings: Settings, account: str, upstream: SMTPServerHandle) -> Iterator[RunningRelay]:
    running = start_relay(settings, upstream.port)
    yield running
    running.stop()


def client_tls(settings: Settings) -> ssl.SSLContext:
    """Trust exactly the certificate the relay generated (its names include 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(settings.data_dir / GENERATED_NAME))


def submit(
    settings: Settings,
    port: int,
    raw: bytes,
    recipients: list[str],
    *,
    sender: str = "alice@example.com",
    password: str = PASSWORD,
    user: str = "alice",
) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.starttls(context=client_tls(settings))
        client.login(user, password)
        client.sendmail(sender, recipients, raw)


def report(settings: Settings, campaign: str | None = None) -> dict[str, Any]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        figures = analytics.report(conn, campaign)
    engine.dispose()
    return figures


def rows(settings: Settings, table: Any) -> list[Any]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        found = list(conn.execute(select(table)))
    engine.dispose()
    return found


# A message as a mail client writes it: folded headers, a Bcc, our instruction headers, text and HTML.
HTML = (
    "<!doctype html><html><body><p>Gr\u00fc\u00dfe,</p>\r\n"
    '<p><a href="https://shop.example/sale?a=1&amp;b=2">sale</a></p>\r\n</body></html>\r\n'
)
TEXT = "Gr\u00fc\u00dfe,\r\nsale: https://shop.example/sale?a=1&b=2\r\n"
HEADERS = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>,\r\n Carol <carol@example.net>\r\n"
    b"Cc: dave@example.com\r\n"
    b"Bcc: eve@example.com\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a long subject line that a client\r\n\tfolded its own way\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1234.5678@example.com>\r\n"
    b"X-Deadpixel-Campaign: Q3 outreach\r\n"
    b"MIME-Version: 1.0\r\n"
)


def message(extra_headers: bytes = b"", *, html: str = HTML, html_cte: str = "quoted-printable") -> bytes:
    import base64
    import binascii

    if html_cte == "base64":
        html_body = base64.encodebytes(html.encode()).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    else:
        html_body = binascii.b2a_qp(html.encode(), istext=True)
    return (
        HEADERS
        + extra_headers
        + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        + b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + TEXT.encode()
        + b"\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        + f"Content-Transfer-Encoding: {html_cte}\r\n\r\n".encode()
        + html_body
        + b"\r\n--b1--\r\n"
    )


def without_bcc_and_ours(raw: bytes) -> bytes:
    """What the relay passes on of message(): no Bcc, no X-Deadpixel-* fields."""
    return re.sub(rb"(?m)^(Bcc|X-Deadpixel-[A-Za-z-]+): .*\r\n", b"", raw)


RECIPIENTS = ["bob@example.org", "carol@example.net", "dave@example.com", "eve@example.com"]


def head_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def parsed(raw: bytes) -> EmailMessage:
    found = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(found, EmailMessage)
    return found


def decoded_parts(raw: bytes) -> list[tuple[str, Any]]:
    return [
        (part.get_content_type(), part.get_content())
        for part in parsed(raw).walk()
        if not part.is_multipart()
    ]


@pytest.mark.parametrize("html_cte", ["quoted-printable", "base64"])
def test_each_recipient_gets_its_own_copy_with_its_own_pixel(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings, html_cte: str
) -> None:
    raw = message(html=HTML, html_cte=html_cte)
    submit(settings, relay.port, raw, RECIPIENTS)

    copies = upstream.sink.messages
    assert sorted(rcpt for copy in copies for rcpt in copy.rcpt_tos) == sorted(RECIPIENTS)
    assert all(len(copy.rcpt_tos) == 1 and copy.mail_from == "alice@example.com" for copy in copies)
    expected_head = head_of(without_bcc_and_ours(raw))
    assert b"Bcc" not in expected_head and b"X-Deadpixel" not in expected_head
    (text, html_before) = decoded_parts(raw)
    tokens = set()
    for copy in copies:
        # Visible headers byte for byte as the client wrote them (folding included): DKIM-safe; no Bcc.
        assert head_of(copy.content) == expected_head
        parts = decoded_parts(copy.content)
        assert parts[0] == text
        assert parts[1][0] == "text/html"
        found = PIXEL.findall(parts[1][1])
        assert len(found) == 1
        tokens.add(found[0][1])
        assert PIXEL.sub("", parts[1][1]) == html_before[1]  # links untouched unless asked
        assert found[0][0].startswith(settings.base_url + "/o/")
    assert len(tokens) == len(RECIPIENTS)

    tracked = rows(settings, messages)
    assert sorted(row.recipient for row in tracked) == sorted(RECIPIENTS)
    assert {row.status for row in tracked} == {"sent"} and all(row.sent_at for row in tracked)
    assert {row.subject for row in tracked} == {
        "Gr\u00fc\u00dfe and a long subject line that a client folded its own way"
    }
    (campaign,) = rows(settings, campaigns)
    assert campaign.name == "Q3 outreach" and {row.campaign_id for row in tracked} == {campaign.id}
    assert {(row.status, row.untracked, row.account) for row in rows(settings, relayed)} == {
        ("sent", None, "alice")
    }
    figures = report(settings, "Q3 outreach")
    assert (figures["sent"], figures["untracked"]) == (len(RECIPIENTS), 0)


@SQLITE_ONLY
def test_the_byte_stream_changes_only_inside_the_html_part(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    raw = message(html=HTML, html_cte="quoted-printable")
    submit(settings, relay.port, raw, ["bob@example.org"])
    (copy,) = upstream.sink.messages
    copy_lines = copy.content.split(b"\r\n")
    original_lines = without_bcc_and_ours(raw).split(b"\r\n")
    html_start = original_lines.index(b"Content-Transfer-Encoding: quoted-printable") + 2
    assert copy_lines[:html_start] == original_lines[:html_start]
    assert copy_lines[-3:] == original_lines[-3:]  # the closing delimiter and what follows


def test_links_are_tracked_only_when_the_client_asks(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    raw = message(b"X-Deadpixel-Track-Links: yes\r\n").replace(b"<1234.5678@", b"<links@")
    submit(settings, relay.port, raw, ["bob@example.org"])
    (copy,) = upstream.sink.messages
    assert b"X-Deadpixel" not in copy.content
    html = decoded_parts(copy.content)[1][1]
    assert "shop.example" not in html and f'href="{settings.base_url}/c/' in html
    (row,) = rows(settings, messages)
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert link_url(conn, row.id, 0) == "https://shop.example/sale?a=1&b=2"
    engine.dispose()


SIGNED = (
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: signed\r\nMessage-ID: <s@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
    b' micalg=sha-256; boundary="s"\r\n'
    b"\r\n--s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>hi</p></body></html>\r\n--s\r\n"
    b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\n"
    b"MIIB\r\n--s--\r\n"
)
ENCRYPTED = (
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: secret\r\nMessage-ID: <e@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="e"\r\n\r\n'
    b"--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQ\r\n"
    b"-----END PGP MESSAGE-----\r\n--e--\r\n"
)
SMIME = (
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: smime\r\nMessage-ID: <p@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAxggFE\r\n"
)
PLAIN = (
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: plain\r\nMessage-ID: <t@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    + "Gr\u00fc\u00dfe\r\n<html><body>not html</body></html>\r\n".encode()
)
DKIM = (
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1;\r\n\th=from:to:subject; bh=x; b=y\r\n"
    + without_bcc_and_ours(message())
)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (PLAIN, "no HTML part"),
        (SIGNED, "signed (multipart/signed)"),
        (ENCRYPTED, "encrypted (multipart/encrypted)"),
        (SMIME, "S/MIME (application/pkcs7-mime)"),
        (DKIM, "DKIM-signed by the client"),
    ],
    ids=["plain-text", "multipart-signed", "multipart-encrypted", "pkcs7-mime", "dkim-signed"],
)  # fmt: skip
@SQLITE_ONLY
def test_untrackable_mail_passes_through_byte_for_byte(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings, raw: bytes, reason: str
) -> None:
    submit(settings, relay.port, raw, ["bob@example.org", "carol@example.net"])
    (copy,) = upstream.sink.messages  # the same bytes for everyone: one copy
    assert copy.content == raw and sorted(copy.rcpt_tos) == ["bob@example.org", "carol@example.net"]
    assert rows(settings, messages) == []
    assert {(row.status, row.untracked, row.message_id) for row in rows(settings, relayed)} == {
        ("sent", reason, None)
    }
    figures = report(settings)
    assert (figures["sent"], figures["untracked"]) == (0, 2)


@SQLITE_ONLY
def test_track_no_sends_untracked_without_our_headers(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    raw = message(b"X-Deadpixel-Track: no\r\n")
    submit(settings, relay.port, raw, ["bob@example.org"])
    (copy,) = upstream.sink.messages
    assert copy.content == without_bcc_and_ours(raw)
    assert b"X-Deadpixel" not in copy.content
    assert rows(settings, messages) == []
    assert [row.untracked for row in rows(settings, relayed)] == ["X-Deadpixel-Track: no"]
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        forget_recipient(conn, "BOB@example.org")
    engine.dispose()
    assert rows(settings, relayed) == []


@SQLITE_ONLY
def test_the_relay_offers_what_submission_needs(relay: RunningRelay, settings: Settings) -> None:
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls") and client.has_extn("auth")  # loopback: AUTH before TLS is fine
        client.starttls(context=client_tls(settings))
        client.ehlo()
        for extension in ("size", "8bitmime", "smtputf8", "auth"):
            assert client.has_extn(extension), extension
        assert set(client.esmtp_features["auth"].upper().split()) >= {"PLAIN", "LOGIN"}
        assert int(client.esmtp_features["size"]) == settings.relay_max_size
    mode = (settings.data_dir / GENERATED_NAME).stat().st_mode & 0o777
    assert mode == 0o600


def test_unauthenticated_clients_cannot_relay(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.starttls(context=client_tls(settings))
        client.ehlo()
        code, _ = client.mail("alice@example.com")
        assert code == 530
        code, _ = client.rcpt("bob@example.org")
        assert code == 530
        code, _ = client.docmd("DATA")
        assert code == 530
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        submit(settings, relay.port, message(), ["bob@example.org"], password="wrong")
    assert refused.value.smtp_code == 535
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:  # an unknown account, over AUTH LOGIN
        client.starttls(context=client_tls(settings))
        client.ehlo()
        client.user, client.password = "mallory", PASSWORD
        with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert unknown.value.smtp_code == 535
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:  # guessing: a few tries per connection
        client.starttls(context=client_tls(settings))
        client.ehlo()
        answers = [client.docmd("AUTH", "PLAIN AGFsaWNlAGd1ZXNz")[0] for _ in range(AUTH_TRIES + 1)]
        assert answers == [535] * AUTH_TRIES + [421]
    assert upstream.sink.messages == [] and rows(settings, messages) == []


def plain(name: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{name}\0{password}".encode()).decode()


def test_relay_guesses_meet_the_dashboards_brake_and_leave_other_addresses_alone(
    relay: RunningRelay, settings: Settings, server_factory: type[Server], env: dict[str, str]
) -> None:
    answers = []
    for connection in range(10):  # what a guesser did: a new connection every 3 tries
        with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
            client.starttls(context=client_tls(settings))
            client.ehlo()
            answers += [
                client.docmd("AUTH", plain("alice", f"guess {connection}.{i}")) for i in range(AUTH_TRIES)
            ]
    codes = [code for code, _ in answers]
    assert codes == [535] * SIGN_IN_TRIES + [454] * (10 * AUTH_TRIES - SIGN_IN_TRIES)
    assert b"try again in" in answers[-1][1]
    # One brake for every way in: the dashboard refuses the same address and account too.
    server = server_factory(env=dict(env)).start()
    with httpx.Client(base_url=server.url) as browser:
        page = browser.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        form = {"csrf": csrf, "name": "alice", "password": PASSWORD}
        assert browser.post("/login", data=form).status_code == 429
    # Alice's mail client at another address is not locked out.
    with smtplib.SMTP(HOST, relay.port, timeout=10, source_address=("127.0.0.2", 0)) as client:
        client.starttls(context=client_tls(settings))
        client.ehlo()
        assert client.docmd("AUTH", plain("alice", PASSWORD))[0] == 235


def test_a_viewer_cannot_send_through_the_relay(relay: RunningRelay, settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "vic", PASSWORD, Role.VIEWER)
    engine.dispose()
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.ehlo()
        code, reason = client.docmd("AUTH", plain("vic", PASSWORD))
        assert code == 535 and b"sender role" in reason
        assert client.docmd("AUTH", plain("alice", PASSWORD))[0] == 235  # the owner may


@SQLITE_ONLY
@pytest.mark.serial
def test_password_checks_leave_the_event_loop_free_and_hash_one_at_a_time(
    relay: RunningRelay, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEADPIXEL_TEST_SCRYPT_N", str(2**14))  # the old default cost: enough to see a stall
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "carol", PASSWORD, Role.SENDER)
    engine.dispose()
    running, most = 0, 0
    lock = threading.Lock()
    real_scrypt = hashlib.scrypt

    def counted(*args: Any, **kwargs: Any) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return real_scrypt(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(hashlib, "scrypt", counted)
    guessers = []
    for _ in range(6):
        client = smtplib.SMTP(HOST, relay.port, timeout=30)
        client.starttls(context=client_tls(settings))
        client.ehlo()
        guessers.append(client)
    probe = smtplib.SMTP(HOST, relay.port, timeout=30)
    probe.ehlo()
    start = threading.Barrier(len(guessers) + 1)
    codes: list[int] = []

    def guess(client: smtplib.SMTP) -> None:
        start.wait()
        codes.append(client.docmd("AUTH", plain("carol", "wrong"))[0])

    threads = [threading.Thread(target=guess, args=(client,)) for client in guessers]
    for thread in threads:
        thread.start()
    start.wait()
    latencies = []
    while not latencies or any(thread.is_alive() for thread in threads):
        began = time.perf_counter()
        assert probe.noop()[0] == 250
        latencies.append(time.perf_counter() - began)
        time.sleep(0.01)
    for client in [*guessers, probe]:
        client.close()
    assert codes == [535] * len(guessers)
    assert max(latencies) < 0.1, f"NOOP waited {max(latencies):.3f} s while passwords were checked"
    assert most == 1


@SQLITE_ONLY
def test_auth_login_works_too(relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings) -> None:
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.starttls(context=client_tls(settings))
        client.ehlo()
        client.user, client.password = "alice", PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        client.sendmail("alice@example.com", ["bob@example.org"], message())
    assert len(upstream.sink.messages) == 1


def test_one_reply_for_all_copies() -> None:
    assert client_reply({}, 3) == "250 2.0.0 OK: sent to 3 recipient(s)"
    mixed = client_reply({"a@x.org": Failure(550, "5.1.1 no such user"), "b@x.org": Failure(451, "busy")}, 1)
    assert mixed.startswith("550 5.0.0 upstream refused a@x.org: 550 5.1.1 no such user")
    assert "b@x.org" not in mixed and mixed.endswith("(sent to the 1 other recipient(s))")
    assert client_reply({"a@x.org": Failure(552, "full"), "b@x.org": Failure(550, "no")}, 0).startswith(
        "554 "
    )
    down = client_reply({"a@x.org": Failure(None, "connection failed: refused")}, 0)
    assert down == "451 4.4.0 upstream did not take it, try again later: a@x.org: connection failed: refused"
    assert client_reply({"a@x.org": Failure(421, "closing")}, 0).startswith("451 ")
    assert client_reply({"a@x.org": Failure(452, "too many")}, 0).startswith("452 ")
    long = client_reply({"a@x.org": Failure(550, "line one\r\nline two " + "x" * 1000)}, 0)
    assert "\r" not in long and "\n" not in long and len(long) <= 400 and "line one line two" in long


def test_loopback_policy() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("mail.example")


@SQLITE_ONLY
def test_off_loopback_nothing_but_starttls_before_tls(
    settings: Settings, account: str, upstream: SMTPServerHandle
) -> None:
    running = start_relay(settings, upstream.port, loopback=False)
    try:
        with smtplib.SMTP(HOST, running.port, timeout=10) as client:
            client.ehlo()
            assert client.has_extn("starttls") and not client.has_extn("auth")
            code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAHg=")
            assert code == 530  # STARTTLS first
            code, _ = client.mail("alice@example.com")
            assert code == 530
            client.starttls(context=client_tls(settings))
            client.ehlo()
            assert client.has_extn("auth")
            client.login("alice", PASSWORD)
            client.sendmail("alice@example.com", ["bob@example.org"], message())
    finally:
        running.stop()
    assert len(upstream.sink.messages) == 1


def test_upstream_down_is_a_temporary_failure_and_a_retry_duplicates_nothing(
    settings: Settings, account: str
) -> None:
    handle = SMTPServerHandle(Sink())  # its port, with nobody listening yet
    running = start_relay(settings, handle.port)
    try:
        with pytest.raises(smtplib.SMTPDataError) as failed:
            submit(settings, running.port, message(), RECIPIENTS)
        assert 400 <= failed.value.smtp_code < 500
        first = {row.id: row for row in rows(settings, messages)}
        assert len(first) == len(RECIPIENTS) and {row.status for row in first.values()} == {"failed"}

        handle.start()  # the upstream is back; the client retries the same message
        try:
            submit(settings, running.port, message(), RECIPIENTS)
            assert len(handle.sink.messages) == len(RECIPIENTS)
        finally:
            handle.stop()
    finally:
        running.stop()
    again = {row.id: row for row in rows(settings, messages)}
    assert set(again) == set(first) and {row.status for row in again.values()} == {"sent"}


def test_a_permanent_refusal_is_passed_back_and_only_the_refused_copy_is_retried(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    upstream.sink.reject.add("carol@example.net")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(settings, relay.port, message(), RECIPIENTS)
    assert refused.value.smtp_code == 550 and b"carol@example.net" in refused.value.smtp_error
    delivered = sorted(rcpt for copy in upstream.sink.messages for rcpt in copy.rcpt_tos)
    assert delivered == sorted(set(RECIPIENTS) - {"carol@example.net"})
    statuses = {row.recipient: row.status for row in rows(settings, messages)}
    assert statuses["carol@example.net"] == "failed" and list(statuses.values()).count("sent") == 3

    upstream.sink.reject.clear()  # fixed upstream; the client sends the same message again
    submit(settings, relay.port, message(), RECIPIENTS)
    assert len(upstream.sink.messages) == len(RECIPIENTS)  # only carol's copy went out again
    assert {row.status for row in rows(settings, messages)} == {"sent"}
    assert len(rows(settings, messages)) == len(RECIPIENTS)


@SQLITE_ONLY
def test_a_resubmission_after_a_lost_reply_sends_nothing_twice(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    submit(settings, relay.port, message(), RECIPIENTS)
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:  # the client never saw the 250: sends again
        client.starttls(context=client_tls(settings))
        client.login("alice", PASSWORD)
        client.mail("alice@example.com")
        for rcpt in RECIPIENTS:
            client.rcpt(rcpt)
        assert client.data(message()) == (250, b"2.0.0 OK: sent to 4 recipient(s)")
    assert len(upstream.sink.messages) == len(RECIPIENTS)
    assert len(rows(settings, messages)) == len(RECIPIENTS)


def test_two_accounts_reusing_a_message_id_each_get_their_own_message_through(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    """A submission is (account, Message-ID, content): a reused Message-ID is no retry of someone else's."""
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "bob", PASSWORD, Role.SENDER)
    engine.dispose()
    alices, bobs = message(html="<p>from alice</p>"), message(html="<p>from bob</p>")
    assert b"Message-ID: <1234.5678@example.com>" in alices and b"Message-ID: <1234.5678@example.com>" in bobs
    submit(settings, relay.port, alices, ["zoe@example.org"])
    submit(settings, relay.port, bobs, ["zoe@example.org"], user="bob", sender="bob@example.com")
    alices_second = message(html="<p>alice again, same Message-ID</p>")
    submit(settings, relay.port, alices_second, ["zoe@example.org"])
    arrived = [copy.html() for copy in upstream.sink.by_recipient()["zoe@example.org"]]
    assert [("from alice" in h, "from bob" in h, "alice again" in h) for h in arrived] == [
        (True, False, False), (False, True, False), (False, False, True)
    ]  # fmt: skip
    submit(settings, relay.port, bobs, ["zoe@example.org"], user="bob", sender="bob@example.com")  # a retry
    assert len(upstream.sink.messages) == 3
    assert len(rows(settings, messages)) == 3 and {r.account for r in rows(settings, relayed)} == {
        "alice", "bob"
    }  # fmt: skip


@SQLITE_ONLY
def test_a_recipient_whose_local_part_needs_quoting_is_refused_at_rcpt(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    """The address checked is the address used: one that SMTP libraries read as another is refused."""
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.starttls(context=client_tls(settings))
        client.login("alice", PASSWORD)
        client.mail("alice@example.com")
        for rcpt in ('"victim@evil.example>"@example.com', '"a b"@example.com', "a@[192.0.2.1]"):
            code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
            assert code == 553 and b"recipient refused" in reply, (rcpt, reply)
        assert client.rcpt("Bob@Example.org")[0] == 250
        assert client.data(message())[0] == 250
    (copy,) = upstream.sink.messages
    assert copy.rcpt_tos == ["Bob@Example.org"]
    (row,) = rows(settings, relayed)
    assert row.recipient == "bob@example.org"


class SlowSink(Sink):
    """An upstream that holds every message until the test lets it go, so a client can hang up meanwhile
    and retry while the first delivery is certainly still under way (however slow the machine is)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


def test_a_client_that_hangs_up_during_relaying_can_retry_without_duplicates(
    settings: Settings, account: str
) -> None:
    sink = SlowSink()
    handle = SMTPServerHandle(sink).start()
    running = start_relay(settings, handle.port)
    try:
        with smtplib.SMTP(HOST, running.port, timeout=10) as client:
            client.starttls(context=client_tls(settings))
            client.login("alice", PASSWORD)
            client.mail("alice@example.com")
            for rcpt in RECIPIENTS:
                client.rcpt(rcpt)
            assert client.putcmd("DATA") is None and client.getreply()[0] == 354
            client.send(message() + b".\r\n")
            client.close()  # gone before the relay could answer
        with pytest.raises(smtplib.SMTPDataError) as meanwhile:  # a retry while it is still under way
            submit(settings, running.port, message(), RECIPIENTS)
        assert meanwhile.value.smtp_code == 451
        sink.release.set()
        deadline = time.monotonic() + 10
        while {row.status for row in rows(settings, messages)} != {"sent"}:
            assert time.monotonic() < deadline, "the copies were not relayed to the end"
            time.sleep(0.05)
        submit(settings, running.port, message(), RECIPIENTS)  # the client's retry
    finally:
        running.stop()
        handle.stop()
    assert len(handle.sink.messages) == len(RECIPIENTS)
    assert len(rows(settings, messages)) == len(RECIPIENTS)


@SQLITE_ONLY
def test_utf8_headers_and_addresses_go_through_with_smtputf8(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings
) -> None:
    raw = message().replace(b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "Subject: Grüße".encode())
    with smtplib.SMTP(HOST, relay.port, timeout=10) as client:
        client.starttls(context=client_tls(settings))
        client.login("alice", PASSWORD)
        client.sendmail("alice@example.com", ["zoë@example.org"], raw, mail_options=["SMTPUTF8"])
    (copy,) = upstream.sink.messages
    assert copy.rcpt_tos == ["zoë@example.org"] and head_of(copy.content).startswith(head_of(raw)[:60])
    assert "Grüße".encode() in copy.content
    (row,) = rows(settings, messages)
    assert row.recipient == "zoë@example.org" and row.subject.startswith("Grüße")


@SQLITE_ONLY
@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed (apt-get install swaks)")
def test_swaks_as_an_independent_client(
    relay: RunningRelay, upstream: SMTPServerHandle, settings: Settings, tmp_path: Any
) -> None:
    eml = tmp_path / "message.eml"
    eml.write_bytes(message())
    result = subprocess.run(
        [
            "swaks", "--server", f"{HOST}:{relay.port}", "--tls", "--tls-verify",
            "--tls-ca-path", str(settings.data_dir / GENERATED_NAME),
            "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", PASSWORD,
            "--from", "alice@example.com", "--to", "bob@example.org,carol@example.net",
            "--data", str(eml),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK: sent to 2 recipient(s)" in result.stdout
    assert sorted(rcpt for copy in upstream.sink.messages for rcpt in copy.rcpt_tos) == [
        "bob@example.org",
        "carol@example.net",
    ]
    assert all(len(PIXEL.findall(decoded_parts(c.content)[1][1])) == 1 for c in upstream.sink.messages)


def test_pixel_template_is_what_the_tests_look_for() -> None:
    assert PIXEL.fullmatch(PIXEL_TEMPLATE.format(src="https://t.example/o/" + "0" * 32 + ".gif"))


@SQLITE_ONLY
def test_deadpixel_relay_end_to_end(
    smtp: SMTPServerHandle, server: Server, settings: Settings, env: dict[str, str]
) -> None:
    """The commands as a user runs them: `user create`, `relay`, `serve`; a recipient's open comes back."""
    deadpixel("user", "create", "alice", "--password-stdin", input=PASSWORD + "\n", check=True)
    port = free_port()
    process = forkserver.spawn(
        ["relay", "--port", str(port)], dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the relay did not start"
                time.sleep(0.05)
        submit(settings, port, message(), ["bob@example.org", "carol@example.net"])
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(20) == 0
    copies = {copy.rcpt_tos[0]: copy for copy in smtp.sink.messages}
    assert sorted(copies) == ["bob@example.org", "carol@example.net"]
    pixel_url = PIXEL.findall(decoded_parts(copies["carol@example.net"].content)[1][1])[0][0]
    path = "/o/" + pixel_url.split("/o/", 1)[1]
    fetched = httpx.get(server.url + path, headers={"user-agent": "Thunderbird"})
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/gif"
    # The GIF is answered only after the open is committed.
    opened = {row.recipient: row.open_count for row in rows(settings, messages)}
    assert opened == {"bob@example.org": 0, "carol@example.net": 1}


CHROMIUM = Path("/usr/bin/chromium")


@SQLITE_ONLY
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_a_reader_opens_a_relayed_copy_in_chromium(
    server: Server, settings: Settings, account: str, upstream: SMTPServerHandle
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    running = start_relay(replace(settings, base_url=server.url), upstream.port)
    try:
        submit(settings, running.port, message(), ["bob@example.org", "carol@example.net"])
    finally:
        running.stop()
    copies = {copy.rcpt_tos[0]: copy for copy in upstream.sink.messages}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.set_content(copies["bob@example.org"].html(), wait_until="load")  # the pixel too
        finally:
            browser.close()
    ids = {row.recipient: row.id for row in rows(settings, messages)}
    (opened,) = rows(settings, opens)
    assert opened.message_id == ids["bob@example.org"] and "Chrome" in opened.user_agent
    figures = report(settings, "Q3 outreach")
    assert (figures["sent"], figures["unique_opens"]) == (2, 1)


@SQLITE_ONLY
def test_past_the_recipient_limit_rcpt_gets_452_and_the_others_get_the_message(
    settings: Settings, account: str, upstream: SMTPServerHandle
) -> None:
    running = start_relay(replace(settings, relay_max_recipients=3), upstream.port)
    try:
        with smtplib.SMTP(HOST, running.port, timeout=10) as client:
            client.starttls(context=client_tls(settings))
            client.login("alice", PASSWORD)
            refused = client.sendmail("alice@example.com", RECIPIENTS, message())
    finally:
        running.stop()
    assert list(refused) == RECIPIENTS[3:]
    code, reply = refused[RECIPIENTS[3]]
    assert code == 452 and reply.startswith(b"4.5.3 Too many recipients")  # RFC 5321, 4.5.3.1.10
    assert sorted(rcpt for copy in upstream.sink.messages for rcpt in copy.rcpt_tos) == sorted(RECIPIENTS[:3])


@dataclass
class CountingSink(Sink):
    """An upstream that keeps only the size of what it was given, so that memory measured is the relay's."""

    sizes: list[int] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sizes.append(len(envelope.content))
        return "250 2.0.0 queued"


@SQLITE_ONLY
def test_copies_are_built_and_sent_one_at_a_time(settings: Settings, account: str) -> None:
    """A 512 KiB HTML message to 16 recipients: the peak memory is a few times the message, not 16."""
    import binascii

    html = "<!doctype html><html><body>\r\n" + f"<p>{'Hello there. ' * 60}</p>\r\n" * 700
    raw = (
        message(html=html)
        .replace(binascii.b2a_qp(html.encode(), istext=True), html.encode())
        .replace(b"Transfer-Encoding: quoted-printable", b"Transfer-Encoding: 8bit")
    )  # long lines: fewer of them
    assert len(raw) > 512 * 1024
    recipients = [f"r{i}@example.org" for i in range(16)]
    handle = SMTPServerHandle(CountingSink()).start()
    running = start_relay(settings, handle.port)
    try:
        submit(settings, running.port, message(html=HTML), ["warm@example.org"])  # imports, caches, pools
        tracemalloc.start()
        submit(settings, running.port, raw, recipients)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        running.stop()
        handle.stop()
    sink = handle.sink
    assert isinstance(sink, CountingSink) and len(sink.sizes) == 1 + len(recipients)
    # Client, relay and upstream together: about 9 times the message here; all 16 copies at once, over 25.
    assert peak < 14 * len(raw), peak / len(raw)
