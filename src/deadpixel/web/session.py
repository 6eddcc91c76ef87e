"""Dashboard sign-in: a signed cookie naming a session kept on the server, and CSRF tokens for every form.

The cookie holds a random session id, signed (itsdangerous) with a secret made on first start and kept 0600
in the data dir, like the signing keys. It is ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` when the public
base URL is HTTPS. The session itself (account, CSRF token, expiry) is a row in the store
(deadpixel.store.web_sessions) that every page looks up: signing out, a new password (``deadpixel user
passwd``) or deleting the account deletes it, so a copied cookie stops working at once. Before sign-in, the
login form is protected by a double-submit token: a random cookie that the form must echo. Password guessing
is braked in deadpixel.accounts.users, for the dashboard and the relay alike.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from deadpixel.store.roles import Role

SESSION_COOKIE = "deadpixel_session"
LOGIN_CSRF_COOKIE = "deadpixel_login"
SESSION_SECONDS = 14 * 86400


@dataclass(frozen=True)
class Session:
    id: str
    user: str
    csrf: str
    role: Role


def load_secret(path: Path) -> bytes:
    """The session secret, created on first use (0600 from the first byte, O_EXCL so two starts agree)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        secret = secrets.token_bytes(32)
        out.write(secret)
    return secret


class Sessions:
    """The cookie side of a session; the store holds the rest."""

    def __init__(self, secret: bytes, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="deadpixel-session")
        self._secure = secure

    def session_id(self, request: Request) -> str | None:
        """The session id the browser's cookie carries, when its signature holds and it is not too old."""
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        found = data.get("i") if isinstance(data, dict) else None
        return found if isinstance(found, str) and found else None

    def start(self, response: Response, session_id: str) -> None:
        value = self._serializer.dumps({"i": session_id})
        response.set_cookie(
            SESSION_COOKIE, value, max_age=SESSION_SECONDS, httponly=True, samesite="lax", secure=self._secure
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE)

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE)

    def login_page_token(self, request: Request) -> str:
        """The login form's CSRF token: the browser's login cookie if it has one, else a new one."""
        return request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)

    def remember_login_token(self, response: Response, token: str) -> None:
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=self._secure)


def same_token(given: object, expected: str | None) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(given, expected or "")
