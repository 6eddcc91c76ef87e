"""Dashboard sessions on the server: a session lasts until it expires, its account signs out, or its
password changes, whatever a copy of its cookie says.

The cookie carries a random 256-bit id; the store keeps its SHA-256, so reading the table (a backup, a
replica) gives nobody a live session. Every signed-in page looks its session up by that hash.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select

from deadpixel.store.roles import Role, parse_role
from deadpixel.store.schema import users, web_sessions


@dataclass(frozen=True, slots=True)
class WebSession:
    user: str
    csrf: str
    role: Role


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def start(conn: Connection, user: str, now: float, lifetime: float) -> str:
    """A new session for ``user``; returns its id, which only the cookie keeps. Expired ones go too."""
    session_id = secrets.token_urlsafe(32)
    purge(conn, now)
    conn.execute(
        insert(web_sessions).values(
            id_hash=_hash(session_id),
            user_name=user,
            csrf=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return session_id


def find(conn: Connection, session_id: str, now: float) -> WebSession | None:
    """The live session with this id and its account's role today (a role change counts at once)."""
    t = web_sessions
    row = conn.execute(
        select(t.c.user_name, t.c.csrf, users.c.role)
        .join(users, users.c.name == t.c.user_name)
        .where(t.c.id_hash == _hash(session_id), t.c.expires_at > now)
    ).one_or_none()
    return None if row is None else WebSession(row.user_name, row.csrf, parse_role(row.role))


def end(conn: Connection, session_id: str) -> None:
    conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == _hash(session_id)))


def end_all(conn: Connection, user: str) -> int:
    """Every session of ``user``: a new password or a deleted account signs it out everywhere."""
    return conn.execute(delete(web_sessions).where(web_sessions.c.user_name == user)).rowcount


def purge(conn: Connection, now: float) -> int:
    return conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now)).rowcount
