"""A real SMTP server for sending tests: aiosmtpd on loopback, with refusals and hang-ups on demand."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from tests.conftest import free_port

HOST = "127.0.0.1"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class Sink:
    messages: list[Received] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)  # 550 at RCPT
    busy: dict[str, int] = field(default_factory=dict)  # 451 at RCPT, this many times
    hang_up_after: int | None = None  # accept this many messages in all, then hang up on every DATA
    drop_in_data: int = 0  # hang up after receiving a message, without answering, this many times
    down_after: int | None = None  # after this many messages: hang up, then answer 421 to every MAIL
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_recipient(self) -> dict[str, list[Received]]:
        found: dict[str, list[Received]] = {}
        for message in self.messages:
            for rcpt in message.rcpt_tos:
                found.setdefault(rcpt, []).append(message)
        return found

    async def handle_MAIL(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self.lock:
            if self.down_after is not None and len(self.messages) >= self.down_after:
                return "421 4.3.2 service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.reject:
            return "550 5.1.1 no such user here"
        if self.busy.get(address):
            self.busy[address] -= 1
            return "451 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert server.transport is not None
        with self.lock:
            if self.hang_up_after is not None and len(self.messages) >= self.hang_up_after:
                server.transport.abort()  # the server went away before answering: nothing stored
                return "421 never seen"
            if self.drop_in_data:
                self.drop_in_data -= 1
                server.transport.abort()
                return "250 never seen"
            assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            if self.down_after is not None and len(self.messages) >= self.down_after:
                asyncio.get_running_loop().call_soon(server.transport.close)  # after the 250 goes out
        return "250 2.0.0 queued"


@dataclass
class SMTPServerHandle:
    sink: Sink
    port: int = field(default_factory=free_port)
    controller: Controller | None = None

    def start(self) -> SMTPServerHandle:
        self.controller = Controller(self.sink, hostname=HOST, port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture(name="smtp")
def smtp_fixture(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[SMTPServerHandle]:
    """A plain-text SMTP server, and DEADPIXEL_SMTP_* pointing at it (for commands run as subprocesses)."""
    handle = SMTPServerHandle(Sink()).start()
    monkeypatch.setenv("DEADPIXEL_SMTP_HOST", HOST)
    monkeypatch.setenv("DEADPIXEL_SMTP_PORT", str(handle.port))
    monkeypatch.setenv("DEADPIXEL_SMTP_TLS", "none")
    monkeypatch.setenv("DEADPIXEL_SMTP_HELO", "client.test")
    monkeypatch.setenv("DEADPIXEL_MAIL_FROM", "News <news@example.com>")
    try:
        yield handle
    finally:
        handle.stop()
