"""Campaign drafts: what the dashboard's "New campaign" form holds, kept between previews until it is sent.

Stored as typed: the templates, the A/B fields and the recipient list as the uploaded CSV text, so the step
that sends (or a later edit) reads exactly what the sender saw previewed. ``Draft.content()`` is the plain
dict of it, the shape a campaign's stored content takes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from deadpixel.store.schema import campaign_drafts

__all__ = ["Draft", "find", "remove", "save"]


@dataclass(frozen=True, slots=True)
class Draft:
    name: str
    sender: str
    subject: str
    html: str
    recipients_csv: str
    text: str | None = None
    subject_b: str | None = None
    ab_share: int | None = None  # percent of the list in the A/B test
    ab_wait_minutes: int | None = None
    id: int | None = None
    created_by: str = ""
    updated_at: float = 0.0

    def content(self) -> dict[str, Any]:
        """The draft as JSON-ready data (id and bookkeeping left out)."""
        found = asdict(self)
        for bookkeeping in ("id", "created_by", "updated_at"):
            del found[bookkeeping]
        return found


_FIELDS = ("name", "sender", "subject", "subject_b", "ab_share", "ab_wait_minutes", "html", "text")


def save(conn: Connection, draft: Draft, actor: str, at: float | None = None) -> int:
    """Insert a new draft (``draft.id`` None) or replace an existing one; its id. LookupError if the id is
    unknown (deleted, or sent meanwhile)."""
    now = time.time() if at is None else at
    values = {name: getattr(draft, name) for name in _FIELDS}
    values["recipients_csv"] = draft.recipients_csv
    if draft.id is None:
        made = conn.execute(
            insert(campaign_drafts)
            .values(**values, created_by=actor, created_at=now, updated_at=now)
            .returning(campaign_drafts.c.id)
        )
        return int(made.scalar_one())
    changed = conn.execute(
        update(campaign_drafts).where(campaign_drafts.c.id == draft.id).values(**values, updated_at=now)
    )
    if changed.rowcount != 1:
        raise LookupError(f"no draft {draft.id}")
    return draft.id


def find(conn: Connection, draft_id: int) -> Draft | None:
    t = campaign_drafts
    row = conn.execute(select(t).where(t.c.id == draft_id)).mappings().first()
    if row is None:
        return None
    return Draft(
        name=row["name"], sender=row["sender"], subject=row["subject"], html=row["html"],
        recipients_csv=row["recipients_csv"], text=row["text"], subject_b=row["subject_b"],
        ab_share=row["ab_share"], ab_wait_minutes=row["ab_wait_minutes"], id=int(row["id"]),
        created_by=row["created_by"], updated_at=float(row["updated_at"]),
    )  # fmt: skip


def remove(conn: Connection, draft_id: int) -> bool:
    """Delete the draft (it was sent); False when it was already gone. Run in the transaction that stores
    its campaign, this is what makes sending a draft happen once: a second try finds nothing to remove."""
    return bool(conn.execute(delete(campaign_drafts).where(campaign_drafts.c.id == draft_id)).rowcount)
