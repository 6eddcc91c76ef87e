"""A contact list as a CSV file: a generic one (an ``email`` column, the others fields) or Mailchimp's
audience export as it comes (``Email Address``, ``First Name``, ``Last Name``, ``TAGS``, ...).

The rows are read with the campaign's recipient reader (``deadpixel.send.recipients``) and every address is
checked by the one address rule (``deadpixel.mail.addresses``). The whole file is read and checked before
anything is stored, so a file that breaks off midway imports nothing; a bad row (no address, a refused
address, a second row for the same mailbox, a bad tag or state) is listed with its line and reason and the
others go in.

Mailchimp's exports of unsubscribed and cleaned members (recognised by their ``UNSUB_TIME`` and
``CLEAN_TIME`` columns) bring their rows in as unsubscribed and bounced. A generic file may carry ``name``,
``tags`` (comma separated) and ``state`` columns, which ``contacts export`` writes, so an export imports back
as it was (a cell the export defused against spreadsheet formulas loses that apostrophe again).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from deadpixel.errors import DeadpixelError
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.reports.exports import FORMULA_STARTS
from deadpixel.send.recipients import BadRow, ListProblem, RecipientList, Row
from deadpixel.store.contacts import STATES, BadTag, Incoming, check_tag

__all__ = ["MAX_BYTES", "MAX_ROWS", "ContactFile", "ImportProblem", "read_contacts"]

MAX_BYTES = 64 * 1024 * 1024
MAX_ROWS = 250_000
MAX_COLUMNS = 200
MAX_FIELDS_CHARS = 64 * 1024  # one contact's fields together
MAILCHIMP_EMAIL = "email address"
# Generic columns that are not fields: what ``contacts export`` writes besides them.
GENERIC_COLUMNS = frozenset({"email", "name", "tags", "state"})


class ImportProblem(DeadpixelError):
    """The file as a whole cannot be imported (too big, no address column, not UTF-8, broken CSV)."""


@dataclass(slots=True)
class ContactFile:
    kind: str  # generic, mailchimp, mailchimp-unsubscribed, mailchimp-cleaned
    rows: list[Incoming] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)


def _kind(lowered: list[str]) -> str:
    if MAILCHIMP_EMAIL not in lowered:
        return "generic"
    if "unsub_time" in lowered:
        return "mailchimp-unsubscribed"
    if "clean_time" in lowered:
        return "mailchimp-cleaned"
    return "mailchimp"


LEAVING = {"mailchimp-unsubscribed": "unsubscribed", "mailchimp-cleaned": "bounced"}


def field_name(column: str) -> str:
    """Mailchimp's column names as template variables: ``First Name`` is ``first_name``."""
    return re.sub(r"[^0-9a-z]+", "_", column.lower()).strip("_") or "field"


def _undefused(value: str) -> str:
    """A cell as exported before an export defused it (``reports.exports.cell``), so exports round-trip."""
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def split_tags(value: str) -> list[str]:
    """``a, b`` or Mailchimp's ``"a","b"``: the tags of one cell."""
    try:
        cells = next(csv.reader([value.replace("\n", " ")]), [])
    except csv.Error:
        cells = value.split(",")
    return [cell.strip() for cell in cells if cell.strip()]


def read_contacts(
    path: Path, tags: tuple[str, ...] = (), *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS
) -> ContactFile:
    """Every row of the file, checked; ImportProblem when the file as a whole cannot be used."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImportProblem(f"cannot read {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise ImportProblem(
            f"{path}: {size:,} bytes, over the limit of {max_bytes:,}; split the file and import each part"
        )
    extra = frozenset(check_tag(tag) for tag in tags)
    try:
        reader = RecipientList(path, email_columns=("email", MAILCHIMP_EMAIL))
        if len(reader.columns) > MAX_COLUMNS:
            raise ImportProblem(f"{path}: {len(reader.columns)} columns, over the limit of {MAX_COLUMNS}")
        kind = _kind([name.lower() for name in reader.columns])
        result = ContactFile(kind)
        first_line: dict[str, int] = {}
        for number, row in enumerate(reader.rows(), 1):
            if number > max_rows:
                raise ImportProblem(
                    f"{path}: more than {max_rows:,} rows; split the file and import each part"
                )
            if isinstance(row, BadRow):
                result.bad.append(row)
                continue
            made = _contact(row, kind, extra)
            if isinstance(made, str):
                result.bad.append(BadRow(row.line, row.email, made))
            elif made.key in first_line:
                result.bad.append(BadRow(row.line, row.email, f"duplicate of line {first_line[made.key]}"))
            else:
                first_line[made.key] = row.line
                result.rows.append(made)
    except ListProblem as exc:
        raise ImportProblem(str(exc)) from None
    except OSError as exc:
        raise ImportProblem(f"cannot read {path}: {exc.strerror}") from None
    return result


def _contact(row: Row, kind: str, extra: frozenset[str]) -> Incoming | str:
    """The row as a contact, or why it is refused."""
    if not row.email:
        return "no address"
    try:
        recipient = parse_recipient(row.email)
    except BadAddress as exc:
        return f"invalid address: {exc}"
    if recipient.header != recipient.address:
        return "a display name with the address; put the name in its own column"
    values = {name.strip(): _undefused(value.strip()) for name, value in row.values.items()}
    lowered = {name.lower(): value for name, value in values.items()}
    try:
        if kind == "generic":
            name = lowered.get("name") or None
            tags = split_tags(lowered.get("tags", ""))
            state = lowered.get("state", "").lower() or "subscribed"
            if state not in STATES:
                return f"state must be one of {', '.join(STATES)} (got {state!r})"
            leaving = None if state == "subscribed" else state
            fields = {k: v for k, v in values.items() if v and k.lower() not in GENERIC_COLUMNS}
        else:
            full = " ".join(filter(None, (lowered.get("first name"), lowered.get("last name"))))
            name = full or None
            tags = split_tags(lowered.get("tags", ""))
            leaving = LEAVING.get(kind)
            skip = {MAILCHIMP_EMAIL, "email", "tags"}
            fields = {field_name(k): v for k, v in values.items() if v and k.lower() not in skip}
        checked = frozenset(check_tag(tag) for tag in tags) | extra
    except BadTag as exc:
        return str(exc)
    if sum(len(k) + len(v) for k, v in fields.items()) > MAX_FIELDS_CHARS:
        return f"fields longer than {MAX_FIELDS_CHARS:,} characters together"
    return Incoming(recipient.key, recipient.address, name, fields, checked, leaving)
