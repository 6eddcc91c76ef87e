"""The audience: contacts (one per mailbox), their fields and tags, and the state the suppression list gives.

A contact's state is never stored with it: it is read from ``suppressions`` (no row: subscribed), so an
unsubscribe, a bounce or a complaint recorded for any address, contact or not, is the contact's state at once,
with no second list to keep in step. The last human open is read, not written: the pixel's writer stays as
it is (see ``last_human_opens``).
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, delete, func, insert, select, update

from deadpixel.errors import DeadpixelError
from deadpixel.events import HUMAN_KINDS
from deadpixel.store.schema import clicks, contact_tags, contacts, messages, opens, suppressions
from deadpixel.store.suppressions import suppress

__all__ = [
    "BOUNCED_SOURCES",
    "COMPLAINED_SOURCES",
    "IMPORT_CLEANED",
    "IMPORT_UNSUBSCRIBED",
    "MAX_TAG",
    "STATES",
    "Applied",
    "BadTag",
    "Contact",
    "Incoming",
    "apply",
    "check_tag",
    "counts",
    "delete_contact",
    "get_contact",
    "last_human_opens",
    "list_contacts",
    "tag_contacts",
    "untag_contacts",
]

STATES = ("subscribed", "unsubscribed", "bounced", "complained")
IMPORT_UNSUBSCRIBED = "import-unsubscribed"  # a row of an unsubscribed export (Mailchimp's, or ours)
IMPORT_CLEANED = "import-cleaned"  # a row of Mailchimp's cleaned export: addresses that bounced there
IMPORT_COMPLAINED = "import-complained"  # a row of our own export in state complained
# Suppression sources by the state they give; every other source (one-click, unsubscribe page, opt-out
# report, cli, an imported unsubscribe) means unsubscribed.
BOUNCED_SOURCES = ("hard-bounce", "soft-bounces", IMPORT_CLEANED)
COMPLAINED_SOURCES = ("complaint", IMPORT_COMPLAINED)
LEAVING_SOURCE = {
    "unsubscribed": IMPORT_UNSUBSCRIBED,
    "bounced": IMPORT_CLEANED,
    "complained": IMPORT_COMPLAINED,
}
MAX_TAG = 100
CHUNK = 500


class BadTag(DeadpixelError, ValueError):
    pass


def check_tag(value: str) -> str:
    """A tag as stored: trimmed, 1 to MAX_TAG characters, no control characters or commas (lists use them)."""
    tag = value.strip()
    if not tag:
        raise BadTag("empty tag")
    if len(tag) > MAX_TAG:
        raise BadTag(f"tag longer than {MAX_TAG} characters")
    if "," in tag or any(unicodedata.category(c)[0] == "C" for c in tag):
        raise BadTag(f"tag {tag!r} holds a comma or a control character")
    return tag


def state_of() -> ColumnElement[str]:
    """The state a contact's suppression row (outer-joined; absent: subscribed) gives it."""
    source = suppressions.c.source
    return case(
        (suppressions.c.address.is_(None), "subscribed"),
        (source.in_(BOUNCED_SOURCES), "bounced"),
        (source.in_(COMPLAINED_SOURCES), "complained"),
        else_="unsubscribed",
    )


@dataclass(frozen=True, slots=True)
class Incoming:
    """One contact as an import brings it."""

    key: str  # lower-cased address
    spelling: str  # the address as written (IDNA domain)
    name: str | None
    fields: dict[str, str]
    tags: frozenset[str] = frozenset()
    leaving: str | None = None  # unsubscribed, bounced or complained: recorded on the suppression list


@dataclass(slots=True)
class Applied:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class Contact:
    id: int
    key: str
    address: str  # the spelling
    name: str | None
    fields: dict[str, str]
    tags: list[str]
    state: str
    created_at: float
    updated_at: float
    last_human_open_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "name": self.name,
            "fields": self.fields,
            "tags": self.tags,
            "state": self.state,
            "created_at": self.created_at,
            "last_human_open_at": self.last_human_open_at,
        }


def _encode(fields: dict[str, str]) -> str:
    return json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _decode(text: str | None) -> dict[str, str]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _chunks(keys: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), CHUNK):
        yield list(keys[start : start + CHUNK])


def tags_of(conn: Connection, keys: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    t = contact_tags.c
    for chunk in _chunks(keys):
        query = select(t.address, t.tag).where(t.address.in_(chunk)).order_by(t.tag)
        for address, tag in conn.execute(query):
            found.setdefault(address, []).append(tag)
    return found


def apply(conn: Connection, incoming: Sequence[Incoming], now: float | None = None) -> Applied:
    """Add or merge these contacts, in the caller's transaction: a field or name given replaces the stored
    one, tags are added, a leaving state goes on the suppression list. An import never takes anyone off
    that list (only ``suppression remove`` does), and what is already so counts as unchanged."""
    at = time.time() if now is None else now
    done = Applied()
    c = contacts.c
    keys = [row.key for row in incoming]
    stored: dict[str, tuple[str | None, dict[str, str]]] = {}
    for chunk in _chunks(keys):
        query = select(c.address, c.name, c.fields).where(c.address.in_(chunk))
        stored.update((a, (n, _decode(f))) for a, n, f in conn.execute(query))
    tags = tags_of(conn, keys)
    new_rows: list[dict[str, Any]] = []
    new_tags: list[dict[str, str]] = []
    for row in incoming:
        changed = False
        if row.leaving is not None:
            changed = suppress(conn, row.key, LEAVING_SOURCE[row.leaving])
        added_tags = sorted(row.tags - set(tags.get(row.key, ())))
        new_tags.extend({"address": row.key, "tag": tag} for tag in added_tags)
        if row.key not in stored:
            new_rows.append(
                {"address": row.key, "spelling": row.spelling, "name": row.name,
                 "fields": _encode(row.fields), "created_at": at, "updated_at": at}
            )  # fmt: skip
            done.added += 1
            continue
        name, fields = stored[row.key]
        merged_name, merged = row.name or name, {**fields, **row.fields}
        if (merged_name, merged) != (name, fields):
            conn.execute(
                update(contacts)
                .where(c.address == row.key)
                .values(name=merged_name, fields=_encode(merged), updated_at=at)
            )
            changed = True
        changed = changed or bool(added_tags)
        done.updated += changed
        done.unchanged += not changed
    for start in range(0, len(new_rows), CHUNK):
        conn.execute(insert(contacts), new_rows[start : start + CHUNK])
    for start in range(0, len(new_tags), CHUNK):
        conn.execute(insert(contact_tags), new_tags[start : start + CHUNK])
    return done


def _query(tag: str | None, state: str | None) -> Any:
    c = contacts.c
    query = select(
        c.id, c.address, c.spelling, c.name, c.fields, c.created_at, c.updated_at, state_of().label("state")
    ).select_from(contacts.outerjoin(suppressions, suppressions.c.address == c.address))
    if tag is not None:
        tagged = select(contact_tags.c.address).where(contact_tags.c.tag == tag)
        query = query.where(c.address.in_(tagged))
    if state is not None:
        query = query.where(state_of() == state)
    return query


def list_contacts(
    conn: Connection,
    *,
    tag: str | None = None,
    state: str | None = None,
    limit: int | None = None,
    after: int | None = None,
    opens: bool = True,
) -> list[Contact]:
    """Contacts in the order they were added, ``limit`` at a time after the id ``after``; with ``opens``, each
    one's last human open (a read over the messages' chains; leave it out where it is not shown)."""
    query = _query(tag, state).order_by(contacts.c.id)
    if after is not None:
        query = query.where(contacts.c.id > after)
    if limit is not None:
        query = query.limit(limit)
    rows = conn.execute(query).all()
    keys = [row.address for row in rows]
    tags = tags_of(conn, keys)
    seen = last_human_opens(conn, keys) if opens else {}
    return [_contact(row, tags.get(row.address, []), seen.get(row.address)) for row in rows]


def _contact(row: Any, tags: list[str], seen: float | None) -> Contact:
    return Contact(
        id=row.id, key=row.address, address=row.spelling, name=row.name, fields=_decode(row.fields),
        tags=tags, state=row.state, created_at=row.created_at, updated_at=row.updated_at,
        last_human_open_at=seen,
    )  # fmt: skip


def get_contact(conn: Connection, key: str | None = None, contact_id: int | None = None) -> Contact | None:
    """One contact by its address (any case) or its id, with its last human open."""
    c = contacts.c
    where = c.address == key.strip().lower() if key is not None else c.id == contact_id
    row = conn.execute(_query(None, None).where(where)).first()
    if row is None:
        return None
    address = row.address
    tags = tags_of(conn, [address]).get(address, [])
    return _contact(row, tags, last_human_opens(conn, [address]).get(address))


def counts(conn: Connection, tag: str | None = None) -> dict[str, int]:
    """How many contacts in each state (every state named, zeros too)."""
    inner = _query(tag, None).subquery()
    rows = conn.execute(select(inner.c.state, func.count()).group_by(inner.c.state)).all()
    found: dict[str, int] = {state: int(n) for state, n in rows}
    return {state: int(found.get(state, 0)) for state in STATES}


def tag_counts(conn: Connection) -> dict[str, int]:
    t = contact_tags.c
    rows = conn.execute(select(t.tag, func.count()).group_by(t.tag).order_by(t.tag)).all()
    return {tag: int(n) for tag, n in rows}


def _existing(conn: Connection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(set(keys))):
        found.update(conn.execute(select(contacts.c.address).where(contacts.c.address.in_(chunk))).scalars())
    return found


def tag_contacts(conn: Connection, keys: Sequence[str], tag: str) -> tuple[int, list[str]]:
    """Give these contacts ``tag``; returns how many did not have it yet and the keys that are no contact."""
    tag = check_tag(tag)
    known = _existing(conn, keys)
    have = {k for k, tags in tags_of(conn, sorted(known)).items() if tag in tags}
    rows = [{"address": key, "tag": tag} for key in sorted(known - have)]
    if rows:
        conn.execute(insert(contact_tags), rows)
    return len(rows), sorted(set(keys) - known)


def untag_contacts(conn: Connection, keys: Sequence[str], tag: str) -> tuple[int, list[str]]:
    """Take ``tag`` off these contacts; returns how many had it and the keys that are no contact."""
    known = _existing(conn, keys)
    removed = 0
    t = contact_tags.c
    for chunk in _chunks(sorted(known)):
        gone = conn.execute(delete(contact_tags).where(t.address.in_(chunk), t.tag == tag.strip()))
        removed += gone.rowcount
    return removed, sorted(set(keys) - known)


def delete_contact(conn: Connection, key: str) -> bool:
    """Remove the contact and its tags (its suppression row, if any, stays: the wish outlives the data)."""
    key = key.strip().lower()
    conn.execute(delete(contact_tags).where(contact_tags.c.address == key))
    return bool(conn.execute(delete(contacts).where(contacts.c.address == key)).rowcount)


def last_human_opens(conn: Connection, keys: Sequence[str]) -> dict[str, float]:
    """Each address's newest human open (verdict human or proxy) or human click, read on demand.

    Opens have no index by message (``deadpixel.store.chains`` says why), so each message's chain is walked
    from its newest open and stops at the first human one: the newest. Messages nobody read as a person
    (``human_open_count`` 0) are not walked at all. Clicks are found by their (message_id, at) index; the
    messages by the index on ``lower(recipient)``. Nothing here is on the pixel's write path.
    """
    found: dict[str, float] = {}
    human = sorted(HUMAN_KINDS)
    m = messages.c
    key = func.lower(m.recipient)
    lateral = conn.dialect.name == "postgresql"
    for chunk in _chunks(sorted(set(keys))):
        head = _open_by_id(m.last_open_id, lateral)
        heads = (
            select(head.c.id, head.c.prev_id, head.c.at, head.c.kind, key.label("address"))
            .select_from(messages.join(head, head.c.id == m.last_open_id))
            .where(key.in_(chunk), m.human_open_count > 0)
        )
        walk = heads.cte("walk", recursive=True)
        before = _open_by_id(walk.c.prev_id, lateral)
        step = (
            select(before.c.id, before.c.prev_id, before.c.at, before.c.kind, walk.c.address)
            .select_from(walk.join(before, before.c.id == walk.c.prev_id))
            .where(walk.c.kind.not_in(human), before.c.id < walk.c.id)
        )
        walk = walk.union_all(step)
        newest_open = (
            select(walk.c.address, func.max(walk.c.at)).where(walk.c.kind.in_(human)).group_by(walk.c.address)
        )
        newest_click = (
            select(key, func.max(clicks.c.at))
            .select_from(messages.join(clicks, clicks.c.message_id == m.id))
            .where(key.in_(chunk), m.human_click_count > 0, clicks.c.kind.in_(human))
            .group_by(key)
        )
        for query in (newest_open, newest_click):
            for address, at in conn.execute(query):
                if at is not None and at > found.get(address, float("-inf")):
                    found[address] = float(at)
    return found


def _open_by_id(wanted: Any, lateral: bool) -> Any:
    """The opens table, or on PostgreSQL the one open with id ``wanted`` as a LATERAL subquery: joined to a
    recursive walk, PostgreSQL's planner guesses the walk's size and hash-joins the whole opens table (a
    second per page of contacts at 150,000 opens); a lateral lookup can only go by primary key. SQLite
    looks each row up by primary key anyway, and has no LATERAL."""
    o = opens.c
    columns = (o.id, o.prev_id, o.at, func.coalesce(o.kind, "").label("kind"))
    if lateral:  # LIMIT 1 (the id is the key) keeps the planner from flattening it back into a join
        return select(*columns).where(o.id == wanted).limit(1).lateral()
    return select(*columns).subquery()
