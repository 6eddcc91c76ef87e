"""Dashboard sign-in: a signed session cookie, CSRF tokens for every form, and a brake on password guessing.

The cookie holds the account name, a digest of its password hash and the session's CSRF token, signed
(itsdangerous) with a secret made on first start and kept 0600 in the data dir, like the signing keys. It is
``HttpOnly``, ``SameSite=Lax``, and ``Secure`` when the public base URL is HTTPS. Every page checks the
account and the digest, so deleting an account or changing its password (``deadpixel user passwd``) ends
its sessions everywhere, including a stolen cookie. Before sign-in, the login form is protected by a
double-submit token: a random cookie that the form must echo.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "deadpixel_session"
LOGIN_CSRF_COOKIE = "deadpixel_login"
SESSION_SECONDS = 14 * 86400
LOGIN_TRIES = 10  # failed sign-ins per client address ...
LOGIN_WINDOW = 600.0  # ... per this many seconds


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    stamp: str


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
    def __init__(self, secret: bytes, secure: bool) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="deadpixel-session")
        self._secure = secure

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        fields = [data.get(key) for key in ("u", "c", "s")] if isinstance(data, dict) else []
        user, csrf, stamp = fields if len(fields) == 3 else (None, None, None)
        if not isinstance(user, str) or not isinstance(csrf, str) or not isinstance(stamp, str):
            return None
        return Session(user, csrf, stamp)

    def start(self, response: Response, user: str, stamp: str) -> None:
        value = self._serializer.dumps({"u": user, "c": secrets.token_urlsafe(24), "s": stamp})
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


class LoginBrake:
    """At most LOGIN_TRIES failed sign-ins per client address per LOGIN_WINDOW; in memory, per process."""

    def __init__(self, tries: int = LOGIN_TRIES, window: float = LOGIN_WINDOW) -> None:
        self._tries = tries
        self._window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < now - self._window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) < self._tries:
                return 0
            return int(failures[0] + self._window - now) + 1

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # a spray of addresses must not grow this without bound
                self._failures = {c: f for c, f in self._failures.items() if f and f[-1] > now - self._window}
