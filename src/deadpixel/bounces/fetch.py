"""``deadpixel bounces fetch``: read a bounce mailbox over IMAP, record what it reports, mark what was read.

imaplib (the standard library) speaks everything needed here: TLS or STARTTLS, SEARCH, FETCH, STORE, MOVE.
Each message read is marked with the keyword ``deadpixel-handled`` (or moved to
DEADPIXEL_BOUNCE_IMAP_DONE_FOLDER), and only unmarked ones are searched for, so a second run reads nothing
twice. A message is marked only after its report was recorded: if the database is away, the run stops and
the next one reads it again (a report recorded twice still counts once, see record.report_key).
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from deadpixel.bounces.handle import Processor
from deadpixel.config import ConfigError, Settings
from deadpixel.errors import DeadpixelError

log = logging.getLogger(__name__)

KEYWORD = "deadpixel-handled"
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailboxError(DeadpixelError):
    """The mailbox cannot be read as configured; the message says what to fix."""

    def one_line(self) -> str:
        return f"bounce mailbox: {self}"


@dataclass
class FetchSummary:
    read: int = 0
    recorded: int = 0
    ignored: int = 0


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def connect(settings: Settings) -> Iterator[imaplib.IMAP4]:
    host = settings.bounce_imap_host
    if host is None or settings.bounce_imap_username is None or settings.bounce_imap_password is None:
        raise ConfigError(
            "bounce_imap_host", "and the IMAP username and password must be set to fetch bounces"
        )
    tls = settings.bounce_imap_tls
    port = settings.bounce_imap_port or (993 if tls == "ssl" else 143)
    context = ssl.create_default_context()
    try:
        conn = (
            imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=60)
            if tls == "ssl"
            else imaplib.IMAP4(host, port, timeout=60)
        )
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"cannot connect to {host}:{port}: {exc}") from None
    try:
        if tls == "starttls":
            conn.starttls(context)
        conn.login(settings.bounce_imap_username, settings.bounce_imap_password)
        yield conn
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"{host}:{port}: {exc}") from None
    finally:
        with suppress(OSError, imaplib.IMAP4.error):
            conn.logout()


def _ok(answer: tuple[str, Sequence[object]], what: str) -> list[object]:
    status, data = answer
    if status != "OK":
        raise MailboxError(f"{what}: {status} {data!r:.200}")
    return list(data)


def _fetched(data: list[object]) -> tuple[bytes, bytes] | None:
    """(the FETCH response line, its literal) of a one-message FETCH."""
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            return bytes(item[0]), bytes(item[1])
    return None


def fetch(settings: Settings, processor: Processor) -> FetchSummary:
    summary = FetchSummary()
    with connect(settings) as conn:
        _ok(conn.select(_quoted(settings.bounce_imap_folder)), f"cannot open {settings.bounce_imap_folder}")
        found = _ok(conn.uid("SEARCH", "UNDELETED", "UNKEYWORD", KEYWORD), "cannot search the mailbox")
        listed = found[0] if found and isinstance(found[0], bytes) else b""
        uids = [uid for uid in listed.split() if uid.isdigit()]
        for uid in uids:
            summary.read += 1
            if _read_one(conn, uid.decode(), processor, settings.bounce_max_size):
                summary.recorded += 1
            else:
                summary.ignored += 1
            _mark(conn, uid.decode(), settings.bounce_imap_done_folder)
        if settings.bounce_imap_done_folder is not None:
            conn.expunge()
    return summary


def _size(data: list[object]) -> int | None:
    for item in data:
        line = item[0] if isinstance(item, tuple) else item
        found = _SIZE.search(line) if isinstance(line, bytes) else None
        if found is not None:
            return int(found.group(1))
    return None


def _read_one(conn: imaplib.IMAP4, uid: str, processor: Processor, max_size: int) -> bool:
    """Record one message's report; False when it was ignored (logged why)."""
    size = _size(_ok(conn.uid("FETCH", uid, "(RFC822.SIZE)"), f"cannot fetch message {uid}"))
    if size is not None and size > max_size:
        log.warning("mailbox message %s ignored: %d bytes, more than %d", uid, size, max_size)
        return False
    body = _fetched(_ok(conn.uid("FETCH", uid, "(BODY.PEEK[])"), f"cannot fetch message {uid}"))
    if body is None:
        log.warning("mailbox message %s ignored: the server sent no content", uid)
        return False
    return processor.process(body[1], source="imap") is not None


def _mark(conn: imaplib.IMAP4, uid: str, done_folder: str | None) -> None:
    if done_folder is None:
        _ok(
            conn.uid("STORE", uid, "+FLAGS", f"({KEYWORD})"),
            "cannot mark a message as read by deadpixel (does the mailbox keep keywords? if not, set"
            " DEADPIXEL_BOUNCE_IMAP_DONE_FOLDER)",
        )
        return
    _ok(conn.uid("COPY", uid, _quoted(done_folder)), f"cannot copy a message to {done_folder}")
    _ok(conn.uid("STORE", uid, "+FLAGS", r"(\Deleted)"), "cannot remove a handled message")
