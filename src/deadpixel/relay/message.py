"""A submitted message as bytes: what to read from it, and how each recipient's copy is made.

Nothing is re-serialised. The email package parses headers only; the MIME tree is walked on the raw bytes
with each part's exact span, so a copy is the original bytes with one span (the HTML part's body) replaced
and a few header fields (Bcc, X-Deadpixel-*) cut out. Every other byte, including the header folding that
DKIM signs and the text part, goes upstream as the client wrote it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import re
from dataclasses import dataclass, replace
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser

__all__ = ["Submitted", "parse"]

# The message's own header with decoded values (Subject, our instructions); inner parts only need their
# structure, which the older compat32 policy reads in half the time.
_HEADERS = BytesHeaderParser(policy=policy.default)
_PART_HEADERS = BytesHeaderParser(policy=policy.compat32)
# Fields that never leave the relay: blind copies stay blind, and our own instructions are for us only.
_DROPPED = (b"bcc:", b"resent-bcc:", b"x-deadpixel-")
# Content a signature or encryption covers: a changed byte would break it, so such mail is passed through.
_SEALED = {
    "multipart/signed": "signed (multipart/signed)",
    "multipart/encrypted": "encrypted (multipart/encrypted)",
    "application/pkcs7-mime": "S/MIME (application/pkcs7-mime)",
    "application/x-pkcs7-mime": "S/MIME (application/x-pkcs7-mime)",
}
CAMPAIGN_NAME_MAX = 200  # the campaigns.name column
_NO = ("no", "false", "0", "off")
_YES = ("yes", "true", "1", "on")


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Header block (with the empty line ending it) and body."""
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0:
            return raw, b""
        if nl == pos or (nl == pos + 1 and raw[pos] == 0x0D):
            return raw[: nl + 1], raw[nl + 1 :]
        pos = nl + 1


def _without_fields(head: bytes, prefixes: tuple[bytes, ...]) -> bytes:
    """The header block minus every field (with its continuation lines) whose name starts with a prefix."""
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] not in (b" ", b"\t"):
            dropping = line.lower().startswith(prefixes)
        if not dropping:
            kept.append(line)
    return b"".join(kept)


def _parts(body: bytes, boundary: str) -> list[tuple[int, int]]:
    """Spans of a multipart body's parts. The line break before a delimiter belongs to the delimiter."""
    # Starting with the literal lets the regex engine skip ahead; the line start is checked by hand.
    delimiter = re.compile(
        rb"--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*(?=\r?\n|\Z)"
    )
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for match in delimiter.finditer(body):
        at = match.start()
        if at and body[at - 1] != 0x0A:
            continue
        if start is not None:
            spans.append((start, max(start, at - (2 if body[at - 2 : at] == b"\r\n" else 1))))
        if match.group(1):
            return spans
        nl = body.find(b"\n", match.end())
        start = len(body) if nl < 0 else nl + 1
    if start is not None:
        spans.append((start, len(body)))  # no closing delimiter: the last part runs to the end
    return spans


class _Sealed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _HTMLPart:
    head_start: int  # the part's header block in the whole message
    start: int  # the part's body
    end: int
    headers: Message


def _find_html(headers: Message, body: bytes, head_start: int, base: int) -> _HTMLPart | None:
    """The first inline text/html part, depth first; raises _Sealed if any part is signed or encrypted."""
    ctype = headers.get_content_type()
    if ctype in _SEALED:
        raise _Sealed(_SEALED[ctype])
    if headers.get_content_maintype() == "multipart":
        boundary = headers.get_boundary()
        if not boundary:
            return None
        found: _HTMLPart | None = None
        for start, end in _parts(body, boundary):
            head, sub = _split_head(body[start:end])
            inner = _find_html(_PART_HEADERS.parsebytes(head), sub, base + start, base + start + len(head))
            found = found or inner
        return found
    if ctype == "text/html" and headers.get_content_disposition() != "attachment":
        return _HTMLPart(head_start, base, base + len(body), headers)
    return None


def _decode(data: bytes, cte: str) -> bytes | None:
    if cte in ("7bit", "8bit", "binary"):
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte == "base64":
        try:
            return base64.b64decode(data)
        except binascii.Error:
            return None
    return None


def _encode(data: bytes, cte: str, original: bytes) -> bytes:
    if cte == "quoted-printable":
        encoded = binascii.b2a_qp(data, istext=True)  # keeps CRLF line breaks as CRLF
    elif cte == "base64":
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        if not original.endswith(b"\n"):
            encoded = encoded.rstrip(b"\r\n")
    else:
        encoded = data
    return encoded


def _too_long(data: bytes) -> bool:
    """SMTP allows 998 octets per line; a pixel or a click URL can push an unencoded line past that."""
    return any(len(line) > 998 for line in data.splitlines())


def _with_encoding(head: bytes, encoding: bytes) -> bytes:
    """A part's header block with its Content-Transfer-Encoding replaced by ``encoding``."""
    fields = _without_fields(head, (b"content-transfer-encoding:",))
    blank = b"\r\n" if fields.endswith(b"\r\n\r\n") else b"\n"
    return fields[: -len(blank)] + b"Content-Transfer-Encoding: " + encoding + b"\r\n" + blank


def _header(headers: Message, name: str) -> str | None:
    """A header's decoded value on one line (folding and runs of whitespace collapsed)."""
    value = headers.get(name)
    return None if value is None else " ".join(str(value).split())


@dataclass(frozen=True, slots=True)
class Submitted:
    """One message as a client submitted it, ready to be copied per recipient.

    ``html`` is the decoded HTML part when the message can carry a pixel; otherwise ``untracked`` says why.
    """

    outgoing: bytes  # the same minus Bcc and X-Deadpixel-* fields: what an untracked copy is
    key: str  # a hash of the Message-ID and the whole message's bytes; see key_for
    subject: str | None
    campaign: str | None
    track_links: bool
    untracked: str | None = None
    notify: bool = False  # X-Deadpixel-Notify: yes (a read notice on the first human open)
    html: str | None = None
    html_head_start: int = 0  # the HTML part's header block in ``outgoing``
    html_start: int = 0  # its body
    html_end: int = 0
    charset: str = "ascii"
    encoding: str = "7bit"  # its Content-Transfer-Encoding

    def key_for(self, account: str) -> str:
        """What identifies a submission: the account, the Message-ID and the content. A client retrying the
        same message gets the same key (and is deduplicated); another account, or another message that
        happens to reuse the Message-ID, gets its own and is sent."""
        return hashlib.sha256(f"{account}\0{self.key}".encode("utf-8", "surrogateescape")).hexdigest()

    def copy_with(self, html: str) -> bytes:
        """The outgoing message with its HTML part's body replaced by ``html`` (same charset and encoding,
        unless a line grew past SMTP's limit: then that part alone becomes quoted-printable)."""
        data = html.encode(self.charset)
        if self.encoding in ("7bit", "8bit", "binary") and _too_long(data):
            head = _with_encoding(self.outgoing[self.html_head_start : self.html_start], b"quoted-printable")
            new = head + binascii.b2a_qp(data, istext=True)
            return self.outgoing[: self.html_head_start] + new + self.outgoing[self.html_end :]
        new = _encode(data, self.encoding, self.outgoing[self.html_start : self.html_end])
        return self.outgoing[: self.html_start] + new + self.outgoing[self.html_end :]


def _content_key(message_id: str | None, raw: bytes) -> str:
    digest = hashlib.sha256((message_id or "").encode("utf-8", "surrogateescape"))
    digest.update(b"\0" + hashlib.sha256(raw).digest())
    return digest.hexdigest()


def parse(raw: bytes) -> Submitted:
    """Read what the relay needs from a submitted message; never fails on odd input, it just won't track."""
    head, body = _split_head(raw)
    headers = _HEADERS.parsebytes(head)
    kept = _without_fields(head, _DROPPED)
    message_id = _header(headers, "Message-ID")
    submitted = Submitted(
        outgoing=kept + body,
        key=_content_key(message_id, raw),
        subject=_header(headers, "Subject"),
        campaign=(_header(headers, "X-Deadpixel-Campaign") or "")[:CAMPAIGN_NAME_MAX] or None,
        track_links=(_header(headers, "X-Deadpixel-Track-Links") or "no").lower() in _YES,
        notify=(_header(headers, "X-Deadpixel-Notify") or "no").lower() in _YES,
    )
    if (_header(headers, "X-Deadpixel-Track") or "yes").lower() in _NO:
        return replace(submitted, untracked="X-Deadpixel-Track: no")
    if "DKIM-Signature" in headers:
        return replace(submitted, untracked="DKIM-signed by the client")
    try:
        part = _find_html(headers, body, 0, len(kept))
    except _Sealed as sealed:
        return replace(submitted, untracked=str(sealed))
    if part is None:
        return replace(submitted, untracked="no HTML part")
    encoding = str(part.headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    data = _decode(submitted.outgoing[part.start : part.end], encoding)
    if data is None:
        return replace(submitted, untracked=f"HTML part in an unknown transfer encoding ({encoding})")
    charset = part.headers.get_content_charset() or "us-ascii"
    try:
        codec = codecs.lookup(charset).name
        html = data.decode(codec)
    except (LookupError, UnicodeDecodeError):
        return replace(submitted, untracked=f"HTML part not readable as {charset}")
    return replace(
        submitted, html=html, html_head_start=part.head_start, html_start=part.start, html_end=part.end,
        charset=codec, encoding=encoding,
    )  # fmt: skip
