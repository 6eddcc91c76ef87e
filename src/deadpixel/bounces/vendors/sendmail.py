"""sendmail's notice, and the older V5 style that has only a session transcript.

----- The following addresses had permanent fatal errors -----
<a@example.org>
    (reason: 550 5.1.1 <a@example.org>... User unknown)

----- Transcript of session follows -----
... while talking to mx.example.org.:
>>> RCPT To:<a@example.org>
<<< 550 5.1.1 <a@example.org>... User unknown
"""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, after, before, blocks, body_text, found, has, reply_lines

LISTS = ("had permanent fatal errors -----", "had transient non-fatal errors -----")
TRANSCRIPT = "----- Transcript of session follows -----"
REASON = re.compile(r"\(reason:\s*(.*?)\)?\s*$", re.IGNORECASE)
_SECTION_END = re.compile(r"^\s*-{3,}", re.MULTILINE)


def _section(text: str, marker: str) -> str:
    rest = after(text, marker) or ""
    end = _SECTION_END.search(rest)
    return rest[: end.start()] if end else rest


def failures(text: str) -> list[Found]:
    transcript = _section(text, TRANSCRIPT)
    replies = reply_lines(transcript)
    permanent: bool | None = True if has(text, LISTS[0]) else None
    if has(text, LISTS[1], "Warning: could not send message"):
        permanent = False
    listed = blocks(_section(text, LISTS[0]) if has(text, LISTS[0]) else _section(text, LISTS[1]))
    if not listed:  # V5: the addresses stand only in the transcript's replies
        listed = [(hit.group(0), "") for line in replies if (hit := ADDRESS.search(line))]
    result = []
    for address, said in listed:
        reason = REASON.search(said)
        mine = [line for line in replies if address in line.lower()]
        text_of = reason.group(1) if reason else (mine[-1] if mine else (replies[-1] if replies else said))
        result.append(found(address, text_of.lstrip("<> ") or None, permanent))
    return list({f.address: f for f in result}.values())


def read(message: Message) -> list[Found] | None:
    text = body_text(message)
    if not has(text, *LISTS, TRANSCRIPT):
        return None
    return failures(before(text, "----- Original message", "----- Unsent message follows")) or None
