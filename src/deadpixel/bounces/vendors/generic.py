"""The last resort, for a notice from a mail system no other reader knows: it must come from a mail
daemon or be titled like a bounce, and then an address must head a paragraph (``<a@example.org>: 550 ...``)
or share a line with an SMTP reply. Anything vaguer is left alone: a wrong address is worse than none."""

from __future__ import annotations

import re
from email.message import Message

from deadpixel.bounces.vendors.model import Found
from deadpixel.bounces.vendors.text import ADDRESS, REPLY, body_text, found, from_blocks, has, sender, subject

DAEMONS = ("mailer-daemon", "mdaemon", "postmaster", "mail delivery", "mail administrator", "mailadmin")
TITLES = re.compile(
    r"undeliver|returned mail|delivery (?:status notification|fail|problem)|failure notice|non-delivery|"
    r"could not be delivered|mail delivery failed|delivery notification|nondeliverable|user unknown",
    re.IGNORECASE,
)
NOT_RECIPIENTS = ("mailer-daemon@", "postmaster@", "abuse@", "noreply@", "no-reply@")
# What stands just before the failed recipient in a sentence naming it: "unable to deliver your message
# to a@b", "Error-for: a@b", "(Originally addressed to a@b)". Looked for only in front of an address.
PHRASE_BEFORE = re.compile(
    r"(?:deliver(?:ed)?(?: your| the)?(?: message| mail)? to|addressed to|undeliverable\s+to|"
    r"Intended recipient:|Error-for:|following recipients?(?: failed permanently)?:|mailbox is full:|"
    r"message to|No such (?:user|recipient):?):?\s*\*?\s*['\"<]{0,2}$",
    re.IGNORECASE,
)
# A delivery receipt from a postmaster names its recipients the way a bounce does; it is no failure.
DELIVERED = ("has been delivered to", "was delivered to", "successfully delivered", "delivered successfully")
FAILED = ("fail", "could not", "couldn't", "unable", "undeliver", "not delivered", "rejected", "error", "550")
DECORATION = re.compile(r"^[ \t]*[=*_#-]{3,}[ \t]*$", re.MULTILINE)  # rules drawn across the notice
PERMANENT = ("permanent fatal errors", "permanent error", "failed permanently", "permanent failure")


def _reply_lines(text: str) -> list[Found]:
    result: dict[str, Found] = {}
    for line in text.split("\n")[:2000]:
        line = line[:1000]
        hit = ADDRESS.search(line)
        if hit is None or not REPLY.search(line.replace(hit.group(0), " ")):
            continue
        address = hit.group(0).lower()
        if not address.startswith(NOT_RECIPIENTS):
            result.setdefault(address, found(address, line, None))
    return list(result.values())[:200]


def _phrases(text: str) -> list[Found]:
    result: dict[str, Found] = {}
    for count, hit in enumerate(ADDRESS.finditer(text)):
        if count >= 1000 or len(result) >= 200:
            break
        address = hit.group(0).lower()
        if address.startswith(NOT_RECIPIENTS) or address in result:
            continue
        if not PHRASE_BEFORE.search(text, max(0, hit.start() - 80), hit.start()):
            continue
        tail = DECORATION.sub("", text[hit.end() : hit.end() + 2000].lstrip("'\">.,:) \t"))
        rest = [p.strip() for p in tail.split("\n\n")[:3]]
        said = rest[0] if len(rest[0]) > 2 else " ".join(rest[1:2])
        if said.endswith(":") and len(rest) > 1:  # "... for the following reason:" and the reason below
            said = f"{said} {rest[1]}"
        result[address] = found(address, said, None)
    return list(result.values())


def read(message: Message) -> list[Found] | None:
    if not (any(d in sender(message) for d in DAEMONS) or TITLES.search(subject(message))):
        return None
    text = body_text(message)
    if has(text, *DELIVERED) and not has(text, *FAILED):
        return None
    result = (
        [f for f in from_blocks(text) if not f.address.startswith(NOT_RECIPIENTS)]
        or _phrases(text)
        or _reply_lines(text)
    )
    replies = _reply_lines(text)
    result = [_with_reply(f, replies, len(result) == 1) for f in result]
    if has(text, *PERMANENT):
        result = [Found(f.address, f.status, f.diagnostic, True) for f in result]
    return result or None


def _with_reply(item: Found, replies: list[Found], alone: bool) -> Found:
    """A sentence without a code, completed with the server's reply: the line that names the address, or
    the only reply in a notice about one recipient."""
    if item.status is not None:
        return item
    mine = [r for r in replies if r.address == item.address]
    reply = mine[0] if mine else (replies[0] if alone and len(replies) == 1 else None)
    if reply is None:
        return item
    return found(item.address, f"{reply.diagnostic} {item.diagnostic or ''}", item.permanent)
