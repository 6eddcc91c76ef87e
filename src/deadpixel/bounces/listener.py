"""``deadpixel bounces listen``: the SMTP server for DEADPIXEL_BOUNCE_DOMAIN that bounces come back to.

It takes mail only for genuine bounce addresses, refused at RCPT time, so nobody can use it to deliver
anything else, and one bounce address per transaction (a second gets 452, which makes the sending server
deliver it separately), so every report is about exactly one message. Messages past
DEADPIXEL_BOUNCE_MAX_SIZE are refused with 552 before they are stored. A report deadpixel does not act on
(an auto-reply, a malformed report) is still accepted: refusing it would only make the sender's server
write another bounce, to nobody.

``postmaster@`` the bounce domain, and a bare ``postmaster``, are accepted too, as RFC 5321 (4.5.1) asks
of every SMTP server. Such mail is logged (envelope sender, From, Subject, size) and not kept: anyone may
write to postmaster, so keeping it would let anyone fill the disk. Whoever wants to read it routes
postmaster@ the domain to a real mailbox in DNS or in the MTA in front of the listener.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from email import policy as email_policy
from email.parser import BytesHeaderParser

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from deadpixel.bounces.handle import Processor
from deadpixel.bounces.verp import message_for
from deadpixel.config import ConfigError, Settings, ensure_data_dir
from deadpixel.mail.serving import close, listen, serve_until_signal
from deadpixel.security.keys import KeyFileReloader, load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import ensure_current

log = logging.getLogger(__name__)


def is_postmaster(address: str, domain: str) -> bool:
    """``postmaster`` (any case), bare or at the bounce domain."""
    local, at, host = address.rpartition("@") if "@" in address else (address, "", "")
    return local.lower() == "postmaster" and (not at or host.rstrip(".").lower() == domain.lower())


def _log_postmaster(raw: bytes, mail_from: str | None, session: Session) -> None:
    head = BytesHeaderParser(policy=email_policy.compat32).parsebytes(raw)

    def field(name: str) -> str:
        return " ".join(str(head.get(name, "")).split())[:200]

    log.warning(
        "mail to postmaster from %r (From: %r, Subject: %r, %d bytes, peer %s): accepted, not kept",
        (mail_from or "")[:200], field("From"), field("Subject"), len(raw), session.peer,
    )  # fmt: skip


class BounceHandler:
    def __init__(self, processor: Processor) -> None:
        self._processor = processor

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        p = self._processor
        if is_postmaster(address, p.domain):
            if envelope.rcpt_tos:
                return "452 4.5.3 one recipient per message, please"
            envelope.rcpt_tos.append(address)
            return "250 OK"
        if message_for(p.signer, address, p.domain) is None:
            log.info("refused RCPT %r from %s: not a bounce address", address[:100], session.peer)
            return "550 5.1.1 no such bounce address"
        if envelope.rcpt_tos:
            return "452 4.5.3 one bounce address per message, please"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        assert isinstance(raw, bytes)
        if any(is_postmaster(rcpt, self._processor.domain) for rcpt in envelope.rcpt_tos):
            _log_postmaster(raw, envelope.mail_from, session)
            return "250 2.0.0 OK"
        try:
            await asyncio.to_thread(
                self._processor.process, raw, source="smtp", envelope_to=list(envelope.rcpt_tos)
            )
        except SQLAlchemyError:
            log.exception("cannot record a report")
            return "451 4.3.0 cannot record the report right now; try again later"
        return "250 2.0.0 OK"


def processor(settings: Settings, engine: Engine) -> Processor:
    """What both the listener and the mailbox reader record with; needs DEADPIXEL_BOUNCE_DOMAIN."""
    if settings.bounce_domain is None:
        raise ConfigError("bounce_domain", "is not set: bounces are matched to messages by their address")
    reload = KeyFileReloader(settings.keys_file)
    signer = TokenSigner(load_or_create_keys(settings.keys_file), reload)
    return Processor(
        engine, signer, settings.bounce_domain, settings.soft_bounce_limit, settings.bounce_max_size
    )


class BounceListener:
    def __init__(self, settings: Settings, *, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._engine: Engine | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        ensure_data_dir(self.settings)
        self._engine = create_engine(self.settings.database_url, writer=True)
        await asyncio.to_thread(ensure_current, self._engine)
        handler = BounceHandler(processor(self.settings, self._engine))
        hostname = socket.gethostname()

        def protocol() -> SMTP:
            return SMTP(
                handler, hostname=hostname, ident="deadpixel bounces",
                data_size_limit=self.settings.bounce_max_size, enable_SMTPUTF8=True,
            )  # fmt: skip

        self._server, self.port = await listen(protocol, self.host, self.port)

    async def stop(self) -> None:
        await close(self._server)
        if self._engine is not None:
            self._engine.dispose()


def run(settings: Settings, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM; each report gets a log line (see deadpixel.server.logs)."""
    serve_until_signal(lambda: BounceListener(settings, host=host, port=port))
