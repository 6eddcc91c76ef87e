"""API tokens: created with a name, shown once, stored as a hash, revoked by name or id.

A secret is ``dp_`` and 43 characters of URL-safe base64 (256 random bits). Since it is that long and random,
a plain SHA-256 of it cannot be guessed back, and a request finds its token with one indexed lookup of the
hash instead of checking a slow hash against every row. Names follow the accounts' rules
(deadpixel.store.names).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from deadpixel.errors import DeadpixelError
from deadpixel.store.names import UserError, check_name
from deadpixel.store.roles import Role, parse_role
from deadpixel.store.schema import api_tokens

PREFIX = "dp_"


class TokenError(DeadpixelError):
    """A token name that cannot be used, exists already, or names no token."""


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None
    role: Role = Role.OWNER


@dataclass(frozen=True, slots=True)
class LiveToken:
    """What a request's token may do: its id (for the rate limit), name (for the audit log) and role."""

    id: int
    name: str
    role: Role


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(conn: Connection, name: str, role: Role = Role.OWNER) -> tuple[ApiToken, str]:
    """A new token and its secret: the only time the secret exists outside the caller's hands."""
    try:
        check_name(name)
    except UserError as exc:
        raise TokenError(str(exc)) from None
    secret = PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    try:
        with conn.begin_nested():
            token_id = conn.execute(
                insert(api_tokens)
                .values(name=name, secret_hash=hash_secret(secret), created_at=now, role=role.label)
                .returning(api_tokens.c.id)
            ).scalar_one()
    except IntegrityError:
        raise TokenError(f"a token named {name!r} already exists") from None
    return ApiToken(int(token_id), name, now, None, None, role), secret


def list_tokens(conn: Connection) -> list[ApiToken]:
    rows = conn.execute(
        select(
            api_tokens.c.id,
            api_tokens.c.name,
            api_tokens.c.created_at,
            api_tokens.c.last_used_at,
            api_tokens.c.revoked_at,
            api_tokens.c.role,
        ).order_by(api_tokens.c.id)
    )
    return [ApiToken(*row[:5], parse_role(row[5])) for row in rows]


def revoke_token(conn: Connection, name_or_id: str) -> ApiToken:
    """Revoke by name, or by id when no token has that name; revoking twice keeps the first time."""
    tokens = list_tokens(conn)
    found = next((t for t in tokens if t.name == name_or_id), None) or next(
        (t for t in tokens if str(t.id) == name_or_id), None
    )
    if found is None:
        raise TokenError(f"no token named {name_or_id!r}")
    if found.revoked_at is not None:
        return found
    now = time.time()
    conn.execute(update(api_tokens).where(api_tokens.c.id == found.id).values(revoked_at=now))
    return ApiToken(found.id, found.name, found.created_at, found.last_used_at, now, found.role)


def token_for_secret(conn: Connection, secret: str) -> LiveToken | None:
    """The live (not revoked) token with this secret, or None."""
    if not secret.startswith(PREFIX):
        return None
    t = api_tokens
    found = conn.execute(
        select(t.c.id, t.c.name, t.c.role).where(
            t.c.secret_hash == hash_secret(secret), t.c.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if found is None else LiveToken(int(found.id), found.name, parse_role(found.role))


def live_secret_hashes(conn: Connection) -> frozenset[str]:
    """The hashes of every token not revoked: a short list, which the API's brake on guessing reads."""
    rows = conn.execute(select(api_tokens.c.secret_hash).where(api_tokens.c.revoked_at.is_(None)))
    return frozenset(rows.scalars())


def mark_used(conn: Connection, token_id: int, at: float) -> None:
    conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at))
