"""What every free-form reader needs: the notification's own text, the addresses in it, the server's reply.

A free-form bounce is prose followed by the returned original; the readers look only at the prose, so the
text is taken from the message's own text parts (never from inside the returned ``message/rfc822``), cut
where the original begins, and bounded, so a hostile message costs at most ``MAX_TEXT`` characters of work.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterable, Sequence
from email.header import decode_header, make_header
from email.message import Message

from deadpixel.bounces.vendors.model import Found

MAX_TEXT = 32_000  # characters of notification text read; the prose of a bounce is a few kB
MAX_PARTS = 50  # MIME parts looked at
MAX_DEPTH = 8  # multipart nesting followed
MAX_DIAGNOSTIC = 500
MAX_FOUND = 200  # recipients taken from one message

# An address as a bounce writes it: local part, @, a domain with at least one dot (or an IP literal).
ADDRESS = re.compile(
    r"(?<![\w.!#$%&*+/?^`{|}~-])[\w!#$%&*+/?^`{|}~-][\w.!#$%&*+/?^`{|}~-]{0,127}@"
    r"(?:(?:[\w-]{1,63}\.)+[\w-]{2,63}|\[[\d.]{7,15}\])"
)
# An address standing at the head of a line: ``<a@b>:``, ``a@b:``, ``a@b (expanded from c@d): reply``.
HEAD = re.compile(
    r"^(?P<indent>[ \t]*)(?:>>>[ \t]*)?[\"<]?(?P<address>" + ADDRESS.pattern + r")[\">]?"
    r"(?:[ \t]*<[^<>\s]{1,300}>)?(?:[ \t]*\((?:expanded|generated) from:?[^)]*(?:\)|$))?"
    r"[ \t]*(?::|\.\.\.|[ \t]-[ \t]|$)[ \t]*(?P<rest>.*)$",
    re.IGNORECASE,
)
ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
REPLY = re.compile(r"(?<![\d.\w])([45])[0-5]\d(?=[ -]|$)")
# Where the returned original (or its headers) begins in a one-part bounce.
ORIGINAL = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*(?:Below this line is a copy of the message|Below the next line is a copy|"
    r"This is a copy of the message|Original message|Message header follows|Message headers follow|"
    r"Unsent Message below|Returned mail|START OF RETURNED MESSAGE)"
    r"|Original message follows\.?$|Included is a copy of the message header)",
    re.IGNORECASE | re.MULTILINE,
)

_cache: tuple[weakref.ref[Message], str] | None = None


def header(message: Message, name: str) -> str:
    """A header's value as text ('' when absent or unreadable), bounded."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(value)[:2000]
    except Exception:  # an undecodable header value is as good as none
        return ""


def sender(message: Message) -> str:
    return header(message, "From").lower()


def subject(message: Message) -> str:
    """The Subject, RFC 2047 words decoded (a bounce's title is often encoded)."""
    value = header(message, "Subject")
    if "=?" in value:
        with contextlib.suppress(Exception):  # a broken encoded word: keep the raw text
            value = str(make_header(decode_header(value)))
    return " ".join(value.split())


def received(message: Message) -> str:
    """All Received headers, joined: where a reader looks for the name of the host that wrote the bounce."""
    values = message.get_all("Received") or []
    return "\n".join(str(v)[:500] for v in values[:20])


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw[:MAX_TEXT] if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload[: MAX_TEXT * 2].decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload[: MAX_TEXT * 2].decode("utf-8", "replace")


def _parts(message: Message) -> Iterable[Message]:
    """The message's parts, breadth first, never inside a returned message, bounded in number and depth
    (``Message.walk`` recurses without limit)."""
    queue: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while queue and seen < MAX_PARTS:
        part, depth = queue.pop(0)
        seen += 1
        yield part
        if part.get_content_type().startswith("multipart/"):
            children = part.get_payload()
            if depth < MAX_DEPTH and isinstance(children, list):
                queue.extend((c, depth + 1) for c in children[:MAX_PARTS] if isinstance(c, Message))


def _text_parts(message: Message) -> Iterable[Message]:
    """The notification's own text parts."""
    for part in _parts(message):
        if part.get_content_type() in ("text/plain", "text/html"):
            yield part


_TAG = re.compile(r"<[^<>]{0,2000}>")
_BREAK = re.compile(r"<(?:br|/p|/div|/tr|p|div)\b[^<>]{0,200}>", re.IGNORECASE)
_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"}


_BLANKS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


def _plain(html: str) -> str:
    text = _TAG.sub("", _BREAK.sub("\n", html))
    for entity, char in _ENTITIES.items():
        text = text.replace(entity, char)
    return _BLANKS.sub("\n\n", text)


def has_report(message: Message) -> bool:
    """Does the message carry an RFC 3464 report that names a recipient? Then that report is read, not the
    prose around it: every reader here answers None (its text is taken as empty)."""
    for part in _parts(message):
        if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else []
        for block in blocks[1:MAX_FOUND]:
            if isinstance(block, Message) and "@" in str(block.get("Final-Recipient", "")):
                return True
        if isinstance(payload, str) and _FINAL.search(payload[:MAX_TEXT]):
            return True
    return False


_FINAL = re.compile(r"^Final-Recipient:[^\n@]{0,300}@", re.IGNORECASE | re.MULTILINE)


def body_text(message: Message) -> str:
    """The notification's text (plain parts, else HTML stripped of tags), up to where the original begins;
    empty when the message has a readable RFC 3464 report (``has_report``).

    Cached for the last message asked about: every reader of the chain reads the same text.
    """
    global _cache
    if _cache is not None and _cache[0]() is message:
        return _cache[1]
    if has_report(message):
        _cache = (weakref.ref(message), "")
        return ""
    plain: list[str] = []
    html: list[str] = []
    size = 0
    for part in _text_parts(message):
        text = _decoded(part)
        (html if part.get_content_type() == "text/html" else plain).append(text)
        size += len(text)
        if size >= MAX_TEXT:
            break
    text = "\n".join(plain) if any(p.strip() for p in plain) else _plain("\n".join(html))
    text = text[:MAX_TEXT].replace("\r\n", "\n").replace("\r", "\n")
    cut = ORIGINAL.search(text)
    if cut:
        text = text[: cut.start()]
    _cache = (weakref.ref(message), text)
    return text


def after(text: str, *markers: str) -> str | None:
    """The text after the first of ``markers`` found (case-insensitive), or None when none is there."""
    lowered = text.lower()
    best = -1
    for marker in markers:
        at = lowered.find(marker.lower())
        if at >= 0 and (best < 0 or at < best):
            best = at + len(marker)
    return None if best < 0 else text[best:]


def before(text: str, *markers: str) -> str:
    """The text up to the first of ``markers`` (case-insensitive); all of it when none is there."""
    lowered = text.lower()
    ends = [at for marker in markers if (at := lowered.find(marker.lower())) >= 0]
    return text[: min(ends)] if ends else text


def has(text: str, *markers: str) -> bool:
    lowered = text.lower()
    return any(marker.lower() in lowered for marker in markers)


def one_line(text: str, limit: int = MAX_DIAGNOSTIC) -> str | None:
    text = " ".join(text.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_of(text: str | None) -> str | None:
    """The enhanced status code in a server's reply (``550 5.1.1 ...``, ``(#5.1.1)``), else the class of a
    bare SMTP reply code (``550 unknown user`` → ``5.0.0``), else None."""
    if not text:
        return None
    match = ENHANCED.search(text)
    if match:
        return ".".join(match.groups())
    reply = REPLY.search(text)
    return f"{reply.group(1)}.0.0" if reply else None


def addresses(text: str) -> list[str]:
    """Every distinct address in ``text``, lower-cased, in order."""
    seen: dict[str, None] = {}
    for match in ADDRESS.finditer(text):
        seen.setdefault(match.group(0).lower().strip("."), None)
        if len(seen) >= MAX_FOUND:
            break
    return list(seen)


def found(address: str, diagnostic: str | None, permanent: bool | None = None) -> Found:
    """A Found with its status read from the diagnostic."""
    line = one_line(diagnostic or "")
    return Found(address.lower().strip("."), status_of(line), line, permanent)


def blocks(text: str, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(address, the lines about it) for each address that heads a paragraph, the way most MTAs write:

        <a@example.org>: host mx.example.org said: 550 5.1.1 no such user
            (in reply to RCPT TO command)

    A block begins at a line that starts with an address (at the indentation of the first such line) and
    runs to the next one, or to a blank line once it has some text. Lines containing one of ``skip`` are
    left out of the diagnostic.
    """
    result: list[tuple[str, list[str]]] = []
    indent: str | None = None
    open_block = False
    for line in text.split("\n")[:2000]:
        head = HEAD.match(line) if len(line) < 1000 else None
        if head and (indent is None or head.group("indent") == indent):
            indent = head.group("indent")
            result.append((head.group("address"), [head.group("rest")] if head.group("rest") else []))
            open_block = True
            if len(result) >= MAX_FOUND:
                break
            continue
        if not open_block:
            continue
        if not line.strip():
            if result[-1][1]:
                open_block = False
            continue
        if not any(s.lower() in line.lower() for s in skip):
            result[-1][1].append(line.strip())
    merged: dict[str, str] = {}
    for address, lines in result:
        key = address.lower()
        merged[key] = (merged.get(key, "") + " " + " ".join(lines)).strip()
    return list(merged.items())


def from_blocks(text: str, permanent: bool | None = None, skip: Sequence[str] = ()) -> list[Found]:
    return [found(address, diagnostic, permanent) for address, diagnostic in blocks(text, skip)]


_FIELD = re.compile(
    r"^[ \t]*(Final-Recipient|Original-Recipient|Diagnostic-Code|Status|Action)[ \t]*:[ \t]*(.*)$", re.I
)


def report_fields(text: str, permanent: bool | None = None) -> list[Found]:
    """Recipients from report fields written into the text itself (``Final-Recipient: rfc822; a@b``,
    ``Diagnostic-Code: smtp; 550 ...``, ``Status: 5.1.1``), as some systems do instead of a real report."""
    result: list[Found] = []
    address: str | None = None
    diagnostic = status = ""
    for line in text.split("\n")[:2000]:
        field = _FIELD.match(line[:1000])
        if not field:
            continue
        name, value = field.group(1).lower(), field.group(2)
        if name == "final-recipient":
            if address:
                result.append(_with_status(found(address, diagnostic, permanent), status))
            hit = ADDRESS.search(value)
            address, diagnostic, status = (hit.group(0) if hit else None), "", ""
        elif name == "diagnostic-code":
            diagnostic = value.partition(";")[2].strip() or value
        elif name == "status":
            status = value.strip()
    if address:
        result.append(_with_status(found(address, diagnostic, permanent), status))
    return result[:MAX_FOUND]


def _with_status(item: Found, status: str) -> Found:
    match = ENHANCED.match(status)
    if not match:
        return item
    code = ".".join(match.groups())
    # a generic x.0.0 in the Status field says less than the code in the server's own reply
    if item.status and code.endswith(".0.0"):
        return item
    return Found(item.address, code, item.diagnostic, item.permanent)


def reply_lines(text: str) -> list[str]:
    """The lines of ``text`` that carry an SMTP reply (``550 5.1.1 ...``, ``<<< 550 ...``)."""
    return [line.strip() for line in text.split("\n")[:2000] if _REPLY_LINE.match(line[:1000])]


_REPLY_LINE = re.compile(r"^[ \t]*(?:<<<[ \t]*)?[45][0-5]\d[ -]")
