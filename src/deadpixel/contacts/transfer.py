"""Contacts in and out: a file imported in one transaction, and the audience written back as CSV.

An import is all or nothing as a transaction: the file is read and checked first (``csvfile``), then every
good row is stored in one transaction with its audit row, so a failure on the way (the database gone, the
process killed) leaves no part of it behind. Bad rows are listed and left out; they never stop the rest.
The same file imported twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from deadpixel.contacts.csvfile import GENERIC_COLUMNS, ContactFile, read_contacts
from deadpixel.reports.exports import cell
from deadpixel.send.recipients import BadRow
from deadpixel.store import audit
from deadpixel.store.contacts import Contact, apply, list_contacts

__all__ = ["Imported", "export_rows", "import_file"]

PAGE = 1000


@dataclass(slots=True)
class Imported:
    kind: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[BadRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "added": self.added, "updated": self.updated, "unchanged": self.unchanged,
            "bad": [{"line": b.line, "value": b.value, "reason": b.reason} for b in self.bad],
        }  # fmt: skip


def import_file(
    engine: Engine, path: Path, tags: tuple[str, ...] = (), actor: str = audit.CLI, label: str | None = None
) -> Imported:
    """Read, check and store ``path`` (``label`` names it in the audit log); ImportProblem (nothing stored)
    when the file cannot be used."""
    found: ContactFile = read_contacts(path, tags)
    with engine.begin() as conn:
        applied = apply(conn, found.rows)
        total = applied.added + applied.updated
        audit.record(conn, actor, "contacts.import", f"{label or path.name}: {total} added or updated")
    return Imported(found.kind, applied.added, applied.updated, applied.unchanged, found.bad)


def contacts_pages(
    engine: Engine, tag: str | None = None, state: str | None = None, opens: bool = False
) -> Iterator[list[Contact]]:
    """Every matching contact, a page at a time (each page its own short read)."""
    after: int | None = None
    while True:
        with engine.connect() as conn:
            page = list_contacts(conn, tag=tag, state=state, limit=PAGE, after=after, opens=opens)
        if not page:
            return
        yield page
        after = page[-1].id


def export_rows(engine: Engine, tag: str | None = None) -> Iterator[str]:
    """The contacts as CSV text: email, name, tags, state, then every field any of them has (one pass to
    learn the fields' names, one to write). ``contacts import`` reads it back as it was."""
    names: set[str] = set()
    for page in contacts_pages(engine, tag):
        for contact in page:
            names.update(contact.fields)
    fields = sorted(n for n in names if n.lower() not in GENERIC_COLUMNS)
    columns = ["email", "name", "tags", "state", *fields]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for page in contacts_pages(engine, tag):
        for c in page:
            own = [c.address, c.name or "", ",".join(c.tags), c.state]
            writer.writerow([cell(v) for v in own + [c.fields.get(n, "") for n in columns[4:]]])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
