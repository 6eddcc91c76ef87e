"""Contacts as the CLI, the API and the dashboard show them: times in ISO 8601 UTC, counts per state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from deadpixel.reports.analytics import iso
from deadpixel.store.contacts import Contact, counts, list_contacts, tag_counts

__all__ = ["contact_row", "contact_rows", "overview"]


def contact_row(contact: Contact) -> dict[str, Any]:
    """One contact: id, address (as written), name, fields, tags, state, created and last human open."""
    row = contact.as_dict()
    return {**row, "created_at": iso(row["created_at"]), "last_human_open_at": iso(row["last_human_open_at"])}


def contact_rows(
    conn: Connection, *, tag: str | None, state: str | None, limit: int, after: int | None
) -> list[dict[str, Any]]:
    return [contact_row(c) for c in list_contacts(conn, tag=tag, state=state, limit=limit, after=after)]


def overview(conn: Connection, tag: str | None = None) -> dict[str, Any]:
    """How many contacts in each state (with ``tag``: of those with it), and every tag with its count."""
    by_state = counts(conn, tag)
    return {"total": sum(by_state.values()), "states": by_state, "tags": tag_counts(conn)}
