"""Who may submit: deadpixel accounts over AUTH PLAIN or LOGIN, and only over TLS unless on loopback."""

from __future__ import annotations

import ipaddress
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import Engine

from deadpixel.users import authenticate


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only (then plain-text AUTH is fine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccountAuthenticator:
    """aiosmtpd's authenticator hook: the session's ``auth_data`` becomes the account name on success.

    aiosmtpd calls this synchronously on the event loop, so a login costs one scrypt (about 40 ms) of loop
    time: fine for the handful of logins a relay for people sees. The server allows few tries per connection.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        name = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        with self._engine.connect() as conn:
            ok = authenticate(conn, name, password)
        return AuthResult(success=ok, handled=False, auth_data=name if ok else None)
