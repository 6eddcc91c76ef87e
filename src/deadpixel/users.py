"""Accounts that may log in: the relay's AUTH now, the web dashboard later.

Passwords are hashed with the standard library's scrypt (memory-hard, so a stolen table is slow to guess
at), with a random salt and the cost parameters stored next to the hash, so the cost can be raised later
without invalidating existing accounts. Verifying compares in constant time and spends the same work on an
unknown name as on a known one, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.store.schema import users

# 2**14 * 8 * 128 bytes = 16 MiB and about 40 ms per hash: slow for a guesser, fine for a login.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
_SALT_BYTES = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class UserError(Exception):
    """A name or password that cannot be used, or an account that exists (or not) when it should not."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    created_at: float


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=_KEY_BYTES
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), self-describing so the parameters can change over time."""
    salt = os.urandom(_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# Hashed once, lazily: what an unknown name is checked against so it costs what a known one does.
_decoy: str | None = None


def _decoy_hash() -> str:
    global _decoy
    if _decoy is None:
        _decoy = hash_password("")
    return _decoy


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(
            f"{name!r} is not a usable name: 1 to 64 letters, digits or . _ @ + -, not starting with a symbol"
        )
    return name


def create_user(conn: Connection, name: str, password: str) -> User:
    check_name(name)
    if not password:
        raise UserError("the password is empty")
    now = time.time()
    try:
        with conn.begin_nested():
            hashed = hash_password(password)
            conn.execute(insert(users).values(name=name, password_hash=hashed, created_at=now))
    except IntegrityError:
        raise UserError(f"a user named {name!r} already exists") from None
    return User(name, now)


def list_users(conn: Connection) -> list[User]:
    rows = conn.execute(select(users.c.name, users.c.created_at).order_by(users.c.name))
    return [User(name, created_at) for name, created_at in rows]


def has_users(conn: Connection) -> bool:
    return conn.execute(select(users.c.name).limit(1)).first() is not None


def set_password(conn: Connection, name: str, password: str) -> None:
    """A new password; every dashboard session of the account ends with the old one."""
    if not password:
        raise UserError("the password is empty")
    hashed = hash_password(password)
    changed = conn.execute(update(users).where(users.c.name == name).values(password_hash=hashed))
    if not changed.rowcount:
        raise UserError(f"no user named {name!r}")


def session_stamp(conn: Connection, name: str) -> str | None:
    """A short digest of the account's password hash, which a session carries: it changes with the password,
    so changing it signs the account out everywhere. None when the account does not exist."""
    stored = conn.execute(select(users.c.password_hash).where(users.c.name == name)).scalar()
    return None if stored is None else hashlib.sha256(stored.encode()).hexdigest()[:24]


def delete_user(conn: Connection, name: str) -> None:
    if not conn.execute(delete(users).where(users.c.name == name)).rowcount:
        raise UserError(f"no user named {name!r}")


def authenticate(conn: Connection, name: str, password: str) -> bool:
    """True when ``name`` exists and ``password`` is its password."""
    stored = conn.execute(select(users.c.password_hash).where(users.c.name == name)).scalar()
    if stored is None:
        check_password(password, _decoy_hash())
        return False
    return check_password(password, stored)
