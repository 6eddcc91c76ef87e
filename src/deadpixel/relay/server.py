"""``deadpixel relay``: an SMTP submission server on aiosmtpd in front of the configured SMTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import warnings

from aiosmtpd.smtp import SMTP
from sqlalchemy import Engine

from deadpixel.config import Settings, ensure_data_dir
from deadpixel.mail.serving import close, listen, serve_until_signal
from deadpixel.mail.smtp import SMTPSettings
from deadpixel.relay.auth import AccountSMTP, is_loopback
from deadpixel.relay.handler import RelayHandler
from deadpixel.relay.tls import server_context
from deadpixel.relay.upstream import Upstream
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.tracked import Tracker
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import ensure_current

AUTH_TRIES = 3  # per connection, besides the sign-in brake of deadpixel.accounts.users


def _quiet_loopback_auth(record: logging.LogRecord) -> bool:
    return "auth_require_tls == False" not in record.getMessage()


class Relay:
    """The listening relay. ``loopback`` decides whether plain-text AUTH is allowed; by default it is allowed
    exactly when the listener is on a loopback address, since nobody else can then see the password."""

    def __init__(
        self,
        settings: Settings,
        upstream: SMTPSettings,
        *,
        host: str,
        port: int,
        loopback: bool | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.loopback = is_loopback(host) if loopback is None else loopback
        self._upstream_settings = upstream
        self._server: asyncio.Server | None = None
        self._upstream: Upstream | None = None
        self._engine: Engine | None = None
        self._handler: RelayHandler | None = None

    async def start(self) -> None:
        ensure_data_dir(self.settings)
        self._engine = create_engine(self.settings.database_url, writer=True)
        await asyncio.to_thread(ensure_current, self._engine)
        tls = server_context(self.settings)
        tracker = Tracker(self.settings, TokenSigner(load_or_create_keys(self.settings.keys_file)))
        self._upstream = Upstream(self._upstream_settings)
        self._handler = handler = RelayHandler(self._engine, tracker, self._upstream)
        hostname = self.settings.smtp_helo or socket.gethostname()  # getfqdn() can stall on DNS

        if self.loopback:  # plain-text AUTH on loopback is a decision: no warning on every connection
            logging.getLogger("mail.log").addFilter(_quiet_loopback_auth)

        def protocol() -> SMTP:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                return self._smtp(handler, hostname, tls)

        self._server, self.port = await listen(protocol, self.host, self.port)

    def _smtp(self, handler: RelayHandler, hostname: str, tls: ssl.SSLContext) -> SMTP:
        assert self._engine is not None
        return AccountSMTP(
            handler,
            accounts=self._engine,
            hostname=hostname,
            ident="deadpixel relay",
            data_size_limit=self.settings.relay_max_size,
            enable_SMTPUTF8=True,
            tls_context=tls,
            require_starttls=not self.loopback,
            auth_required=True,
            auth_require_tls=not self.loopback,
            command_call_limit={"AUTH": AUTH_TRIES, "*": 2**31 - 1},  # guessing needs new connections
        )

    async def stop(self) -> None:
        await close(self._server)
        if self._handler is not None:
            await self._handler.drain()
        if self._upstream is not None:
            await asyncio.to_thread(self._upstream.close)
        if self._engine is not None:
            self._engine.dispose()


def run(settings: Settings, upstream: SMTPSettings, *, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, with a line on stderr per message relayed."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s deadpixel relay: %(message)s"))
    relay_log = logging.getLogger("deadpixel.relay")
    relay_log.addHandler(handler)
    relay_log.setLevel(logging.INFO)

    serve_until_signal(lambda: Relay(settings, upstream, host=host, port=port))
