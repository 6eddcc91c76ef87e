"""Accounts that may sign in: to the web dashboard and to the relay's AUTH, with one brake for both.

Passwords are hashed with the standard library's scrypt (memory-hard, so a stolen table is slow to guess
at), with a random salt and the cost parameters stored next to the hash (``scrypt$n$r$p$salt$hash``), so the
cost can be raised without invalidating existing accounts: an older hash still verifies, and a successful
sign-in stores the password again at today's cost. Verifying compares in constant time and spends the same
work on an unknown name as on a known one, so timing does not tell which names exist.

A hash at today's cost takes 128 MiB and a few tenths of a second, so sign-ins hash on a thread of their own,
one at a time per process: the event loop keeps answering while a password is checked, and a burst of
sign-ins queues instead of multiplying the memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.store import sign_ins, web_sessions
from deadpixel.store.names import NAME, UserError, check_name
from deadpixel.store.roles import Role, parse_role
from deadpixel.store.schema import users

__all__ = [
    "MAX_N",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SIGN_IN_TRIES",
    "SIGN_IN_WINDOW",
    "TEST_COST_ENV",
    "SignIn",
    "User",
    "UserError",
    "authenticate",
    "check_name",
    "check_password",
    "create_user",
    "delete_user",
    "has_users",
    "hash_password",
    "list_users",
    "outdated",
    "role_of",
    "scrypt_cost",
    "set_password",
    "set_role",
    "sign_in",
]

# OWASP's password storage guidance for scrypt: N=2**17, r=8, p=1 (128 MiB, about 0.3-0.5 s per hash).
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
# For test suites only: a lower N, so that tests signing in many times stay fast. Never set it in production.
TEST_COST_ENV = "DEADPIXEL_TEST_SCRYPT_N"
MAX_N = 2**20  # a stored hash asking for more memory than this (1 GiB) is refused, not computed
_KEY_BYTES = 32
_SALT_BYTES = 16

# The sign-in brake (see deadpixel.store.sign_ins): tries per client address and account per window.
SIGN_IN_TRIES = 10
SIGN_IN_WINDOW = 600.0
_PURGE_ONE_IN = 64  # tries that also forget ended windows

_hash_lock = threading.Lock()  # one hash at a time in this process, whoever asks
_hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deadpixel-scrypt")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    created_at: float
    role: Role = Role.OWNER


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scrypt_cost() -> tuple[int, int, int]:
    """Today's (N, r, p): OWASP's, unless a test suite lowered N through DEADPIXEL_TEST_SCRYPT_N."""
    lowered = os.environ.get(TEST_COST_ENV)
    if not lowered:
        return SCRYPT_N, SCRYPT_R, SCRYPT_P
    n = int(lowered) if lowered.isdigit() else 0
    if n < 2 or n > SCRYPT_N or n & (n - 1):
        raise UserError(f"{TEST_COST_ENV} must be a power of two from 2 to {SCRYPT_N}, not {lowered!r}")
    return n, SCRYPT_R, SCRYPT_P


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    if not 1 < n <= MAX_N or not 0 < r <= 32 or not 0 < p <= 16:
        raise ValueError("scrypt parameters out of range")
    with _hash_lock:
        return hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2**20, dklen=_KEY_BYTES
        )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64), self-describing so the parameters can change over time."""
    n, r, p = scrypt_cost()
    salt = os.urandom(_SALT_BYTES)
    key = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(key)}"


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


def outdated(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's (then a sign-in stores it again)."""
    n, r, p = scrypt_cost()
    return not stored.startswith(f"scrypt${n}${r}${p}$")


# Hashed once per cost, lazily: what an unknown name is checked against so it costs what a known one does.
_decoys: dict[tuple[int, int, int], str] = {}


def _decoy_hash() -> str:
    cost = scrypt_cost()
    if cost not in _decoys:
        _decoys[cost] = hash_password("")
    return _decoys[cost]


def create_user(conn: Connection, name: str, password: str, role: Role | None = None) -> User:
    """A new account; without ``role``, the first account is an owner and every later one a viewer."""
    check_name(name)
    if not password:
        raise UserError("the password is empty")
    if role is None:
        role = Role.VIEWER if has_users(conn) else Role.OWNER
    now = time.time()
    try:
        with conn.begin_nested():
            hashed = hash_password(password)
            conn.execute(
                insert(users).values(name=name, password_hash=hashed, created_at=now, role=role.label)
            )
    except IntegrityError:
        raise UserError(f"a user named {name!r} already exists") from None
    return User(name, now, role)


def list_users(conn: Connection) -> list[User]:
    rows = conn.execute(select(users.c.name, users.c.created_at, users.c.role).order_by(users.c.name))
    return [User(name, created_at, parse_role(role)) for name, created_at, role in rows]


def role_of(conn: Connection, name: str) -> Role | None:
    """The account's role, or None when no account has that name."""
    found = conn.execute(select(users.c.role).where(users.c.name == name)).scalar()
    return None if found is None else parse_role(found)


def _owners(conn: Connection) -> list[str]:
    """The owners' names, their rows locked (PostgreSQL) so two demotions at once cannot both pass."""
    query = select(users.c.name).where(users.c.role == Role.OWNER.label).with_for_update()
    return list(conn.execute(query).scalars())


def _keep_an_owner(conn: Connection, name: str) -> None:
    if _owners(conn) == [name]:
        raise UserError(f"{name!r} is the last owner: make another account an owner first")


def set_role(conn: Connection, name: str, role: Role) -> Role:
    """Give ``name`` a role; returns the role it had. The last owner cannot be demoted."""
    before = role_of(conn, name)
    if before is None:
        raise UserError(f"no user named {name!r}")
    if before is Role.OWNER and role is not Role.OWNER:
        _keep_an_owner(conn, name)
    conn.execute(update(users).where(users.c.name == name).values(role=role.label))
    return before


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
    web_sessions.end_all(conn, name)


def delete_user(conn: Connection, name: str) -> None:
    """Delete an account and end its sessions; the last owner cannot be deleted."""
    if role_of(conn, name) is Role.OWNER:
        _keep_an_owner(conn, name)
    if not conn.execute(delete(users).where(users.c.name == name)).rowcount:
        raise UserError(f"no user named {name!r}")
    web_sessions.end_all(conn, name)


def authenticate(conn: Connection, name: str, password: str) -> bool:
    """True when ``name`` exists and ``password`` is its password."""
    stored = conn.execute(select(users.c.password_hash).where(users.c.name == name)).scalar()
    if stored is None:
        check_password(password, _decoy_hash())
        return False
    return check_password(password, stored)


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in came to: ``ok``, or a refusal; ``retry_after`` > 0 when the brake held it (the
    password was then not checked) and says in how many seconds the pair may try again."""

    ok: bool
    retry_after: int = 0


def _start_try(engine: Engine, client: str, name: str) -> tuple[int, str | None]:
    """Count the try (the brake) and read the stored hash, in one transaction."""
    now = time.time()
    with engine.begin() as conn:
        if random.randrange(_PURGE_ONE_IN) == 0:
            sign_ins.purge(conn, now, SIGN_IN_WINDOW)
        wait = sign_ins.take(conn, client, name, now, SIGN_IN_TRIES, SIGN_IN_WINDOW)
        if wait:
            return wait, None
        return 0, conn.execute(select(users.c.password_hash).where(users.c.name == name)).scalar()


def _succeeded(engine: Engine, client: str, name: str, stored: str, rehashed: str | None) -> None:
    with engine.begin() as conn:
        sign_ins.clear(conn, client, name)
        if rehashed is not None:  # unless the password changed meanwhile
            conn.execute(
                update(users)
                .where(users.c.name == name, users.c.password_hash == stored)
                .values(password_hash=rehashed)
            )


def _verify(password: str, stored: str | None) -> bool:
    if stored is None:
        check_password(password, _decoy_hash())
        return False
    return check_password(password, stored)


async def sign_in(engine: Engine, client: str, name: str, password: str) -> SignIn:
    """Check ``name`` and ``password`` for a client at address ``client``, through the brake.

    The dashboard and the relay both come here, so they share one brake. The try is counted before the
    password is checked, so concurrent guesses cannot overshoot the limit; ``engine`` must take SQLite's
    write lock up front (``writer=True``). The hashing runs on this process's hashing thread.
    """
    if not NAME.fullmatch(name):
        return SignIn(False)  # no account has such a name: nothing to hash, nothing to count
    wait, stored = await asyncio.to_thread(_start_try, engine, client, name)
    if wait:
        return SignIn(False, wait)
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(_hasher, _verify, password, stored):
        return SignIn(False)
    assert stored is not None
    rehashed = await loop.run_in_executor(_hasher, hash_password, password) if outdated(stored) else None
    await asyncio.to_thread(_succeeded, engine, client, name, stored, rehashed)
    return SignIn(True)
