"""Who may submit: deadpixel accounts over AUTH PLAIN or LOGIN, and only over TLS unless on loopback.

aiosmtpd calls an ``authenticator`` synchronously on the event loop, where a password hash (a few tenths of
a second at today's cost) would hold up every other connection. So the relay brings its own PLAIN and LOGIN
mechanisms, which read the credentials with aiosmtpd's public ``challenge_auth`` and await the check in
deadpixel.accounts.users.sign_in: on the hashing thread, through the same brake as the dashboard's sign-in,
keyed on the connection's address and the account. Sending takes the sender role
(deadpixel.store.roles): a viewer's right password is refused like a wrong one, with its own reason.
"""

from __future__ import annotations

import asyncio
import binascii
import ipaddress
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult
from sqlalchemy import Engine

from deadpixel.accounts.users import role_of, sign_in
from deadpixel.store.roles import Role

BRAKED = "454 4.7.0 Too many failed sign-ins; try again in {} seconds"
NOT_A_SENDER = "535 5.7.8 This account may not send mail: it needs the sender role"


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only (then plain-text AUTH is fine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccountSMTP(SMTP):
    """aiosmtpd's SMTP server whose AUTH checks deadpixel accounts; ``auth_data`` becomes the account name."""

    def __init__(self, *args: Any, accounts: Engine, **kwargs: Any) -> None:
        """``accounts`` is a writer engine (``writer=True``): every try is counted in the store."""
        self._accounts = accounts
        super().__init__(*args, **kwargs)

    async def _decoded(self, initial: str | None, challenge: str) -> bytes | None:
        """The client's answer to ``challenge`` (or the initial response it sent along), base64-decoded;
        None when it aborted or sent no base64, which has been answered already."""
        if initial is None:
            answer = await self.challenge_auth(challenge)
            return None if answer is MISSING else bytes(answer)
        try:
            return b64decode(initial.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        blob = await self._decoded(args[1] if len(args) > 1 else None, "")
        if blob is None:
            return AuthResult(success=False, handled=True)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._check(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._decoded(args[1] if len(args) > 1 else None, self.AuthLoginUsernameChallenge)
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._decoded(None, self.AuthLoginPasswordChallenge)
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        assert self.session is not None
        peer = self.session.peer
        client = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        name = login.decode("utf-8", "replace")
        result = await sign_in(self._accounts, client, name, password.decode("utf-8", "replace"))
        if result.retry_after:
            return AuthResult(success=False, handled=False, message=BRAKED.format(result.retry_after))
        if result.ok and not await asyncio.to_thread(self._may_send, name):
            return AuthResult(success=False, handled=False, message=NOT_A_SENDER)
        return AuthResult(success=result.ok, handled=False, auth_data=name if result.ok else None)

    def _may_send(self, name: str) -> bool:
        with self._accounts.connect() as conn:
            role = role_of(conn, name)
        return role is not None and role.allows(Role.SENDER)
