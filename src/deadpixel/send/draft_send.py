"""A dashboard draft sent: counted for the confirmation step, then stored as a campaign the server sends.

The draft becomes a stored campaign (``deadpixel.send.stored``, the one implementation the command line and
the API use) in the transaction that deletes the draft, so a second click, a double POST or a reload of the
confirming form finds no draft and cannot start a second send.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.send import stored
from deadpixel.send.recipients import BadRow, RecipientList, Row
from deadpixel.send.smtp_config import sender_address
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store import drafts
from deadpixel.store.drafts import Draft
from deadpixel.store.suppressions import suppressed

__all__ = ["DraftGone", "NotSendable", "Tally", "check_sendable", "first_row", "send", "tally"]


class DraftGone(DeadpixelError, LookupError):
    """The draft is no longer there: sent already (or deleted)."""


class NotSendable(DeadpixelError, ValueError):
    """A draft that cannot be sent as it is; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Tally:
    """What a send of the list would do, as the campaign runner will judge each row."""

    recipients: int  # messages that will go: readable, unique, not suppressed
    invalid: int  # rows that cannot be read or whose address is unusable
    duplicates: int  # a second row for a mailbox already listed
    suppressed: int  # unsubscribed, bounced or complained before


def _keyed(csv_text: str) -> Iterator[tuple[Row, str] | None]:
    """Each row of the list with its mailbox key, or None for a row that cannot be sent to."""
    if not csv_text.strip():
        return
    for row in RecipientList.from_text(csv_text, "The recipient list").rows():
        if isinstance(row, BadRow):
            yield None
            continue
        try:
            yield row, parse_recipient(row.email).key
        except BadAddress:
            yield None


def first_row(csv_text: str) -> Row | None:
    """The list's first row that can be sent to (the one the confirmation's warnings are checked with)."""
    return next((found[0] for found in _keyed(csv_text) if found is not None), None)


def tally(conn: Connection, csv_text: str) -> Tally:
    """Count the list's rows the way ``CampaignRunner`` treats them (one message per mailbox key)."""
    keys: list[str] = []
    seen: set[str] = set()
    invalid = duplicates = 0
    for found in _keyed(csv_text):
        if found is None:
            invalid += 1
            continue
        key = found[1]
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        keys.append(key)
    blocked = len(suppressed(conn, keys))
    return Tally(len(keys) - blocked, invalid, duplicates, blocked)


def check_sendable(draft: Draft) -> None:
    """NotSendable for a draft the stored sender cannot take."""
    if draft.subject_b or draft.ab_share:
        raise NotSendable(
            "A/B tests are not sent from the dashboard yet: clear the second subject and the test share, or"
            " send it with `deadpixel campaign send --subject A --subject B --test-share 0.2`."
        )
    if not draft.html.strip():
        raise NotSendable("Write the HTML first.")
    if not draft.recipients_csv.strip():
        raise NotSendable("Upload a recipient list first.")


def send(
    conn: Connection, settings: Settings, draft_id: int, *, actor: str, due_at: float | None
) -> jobs.Job:
    """Store the draft as a campaign sent now (``due_at`` None) or at ``due_at``, and delete the draft, in
    the caller's transaction. DraftGone when it was sent (or deleted) already."""
    draft = drafts.find(conn, draft_id)
    if draft is None or not drafts.remove(conn, draft_id):
        raise DraftGone(f"draft {draft_id} was sent already or deleted")
    check_sendable(draft)
    content = jobs.Content(sender_address(settings, draft.sender), draft.subject, draft.html, draft.text)
    rows = stored.stored_rows(RecipientList.from_text(draft.recipients_csv, "The recipient list").rows())
    stored.store(conn, draft.name, content, rows, actor=actor, due_at=due_at)
    if due_at is None:
        return stored.act(conn, draft.name, "send", actor=actor)
    found = jobs.latest(conn, draft.name)
    assert found is not None
    return found
