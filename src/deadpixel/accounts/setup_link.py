"""The one-time link that creates the first account in the browser.

While no account exists, ``deadpixel serve`` makes a fresh random token at every start and prints
``<base url>/setup/<token>`` on its console, and nowhere else: whoever reads the server's console may
create the first account, and nobody else. Only the token's SHA-256 is kept, in ``setup-token`` in the data
dir (0600), written by the serving process before its workers start, so the link works whichever worker
answers. Using the link takes the file away first (an atomic rename), so two submissions cannot both
create an account, and the link works once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "setup-token"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def token_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def issue(data_dir: Path) -> str:
    """A new token, replacing any earlier one; only its hash reaches the disk (0600 from the first byte)."""
    token = secrets.token_urlsafe(32)
    path = token_file(data_dir)
    fresh = path.with_name(f"{FILE_NAME}.{secrets.token_hex(8)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_digest(token) + "\n")
    os.replace(fresh, path)
    return token


def discard(data_dir: Path) -> None:
    """No link any more (an account exists)."""
    token_file(data_dir).unlink(missing_ok=True)


def _stored(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def matches(data_dir: Path, token: str) -> bool:
    """Whether ``token`` is the current, unused one (compared in constant time)."""
    stored = _stored(token_file(data_dir))
    return stored is not None and hmac.compare_digest(_digest(token), stored)


class Claim:
    """The token taken for one account creation: ``done`` once the account exists, ``give_back`` when
    creating it failed for a reason that was not the user's (the link then works again)."""

    def __init__(self, data_dir: Path, held: Path) -> None:
        self._path = token_file(data_dir)
        self._held = held

    def done(self) -> None:
        self._held.unlink(missing_ok=True)

    def give_back(self) -> None:
        try:
            os.rename(self._held, self._path)
        except OSError:
            self._held.unlink(missing_ok=True)


def claim(data_dir: Path, token: str) -> Claim | None:
    """Take the token for this request alone; None when it is wrong or another request took it first."""
    path = token_file(data_dir)
    if not matches(data_dir, token):
        return None
    held = path.with_name(f"{FILE_NAME}.used.{secrets.token_hex(8)}")
    try:
        os.rename(path, held)  # atomic: of two requests, one finds the file gone
    except FileNotFoundError:
        return None
    if not hmac.compare_digest(_digest(token), _stored(held) or ""):  # a restart replaced it meanwhile
        Claim(data_dir, held).give_back()
        return None
    return Claim(data_dir, held)
