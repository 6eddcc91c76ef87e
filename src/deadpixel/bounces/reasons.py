"""Why a message was not delivered, in a fixed vocabulary, and what follows from each reason.

The reason decides what deadpixel does about the recipient. Only a failure that says the *address* does not
exist suppresses it; a full or disabled mailbox, mail the receiver filtered, and every failure that is the
sender's own problem (authentication, reputation, content, rate) never do. A sender whose SPF record breaks
for an hour must not lose every recipient it mailed in that hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    """The documented vocabulary (docs/bounces.md). The values are stored and shown as they are."""

    USER_UNKNOWN = "user unknown"  # no such mailbox, or moved with no forwarding address (5.1.1, 5.1.6)
    DOMAIN_NOT_FOUND = "domain not found"  # no MX/A, or the domain does not accept mail (5.1.2, 5.1.10)
    MAILBOX_DISABLED = "mailbox disabled"  # exists but suspended, locked or inactive (5.2.1)
    MAILBOX_FULL = "mailbox full"  # over quota (4.2.2, 5.2.2)
    MESSAGE_TOO_BIG = "message too big"  # 5.2.3, 5.3.4
    BLOCKED = "blocked"  # the sending IP or domain: blocklists, reputation, no PTR
    SPAM = "spam/content"  # the message's content was judged spam or dangerous
    AUTHENTICATION = "authentication failure"  # SPF, DKIM or DMARC (5.7.26, 5.7.27, 5.7.1 + text)
    POLICY = "policy"  # refused by the receiver's rules, not about the address (5.7.x otherwise)
    RATE_LIMITED = "rate limited"  # too many messages or connections (4.7.0 + text, 5.7.28)
    EXPIRED = "expired"  # the sending side gave up retrying (4.4.7)
    NETWORK = "network"  # connection refused or timed out, DNS failures (4.4.x)
    SYSTEM = "system"  # the receiving system's own trouble (4.3.x, 5.3.x)
    OTHER = "other"  # nothing above fits


# Failures that are the sender's problem: they say nothing about the recipient's address.
SENDER_SIDE: frozenset[Reason] = frozenset(
    {Reason.BLOCKED, Reason.SPAM, Reason.AUTHENTICATION, Reason.RATE_LIMITED, Reason.MESSAGE_TOO_BIG}
)
# Failures that say the address itself is gone: the only ones that suppress at once.
ADDRESS_GONE: frozenset[Reason] = frozenset({Reason.USER_UNKNOWN, Reason.DOMAIN_NOT_FOUND})
# Failures about the recipient's side that, repeated, say the address is dead (the soft-bounce streak).
RECIPIENT_SIDE: frozenset[Reason] = frozenset(
    {*ADDRESS_GONE, Reason.MAILBOX_DISABLED, Reason.MAILBOX_FULL, Reason.EXPIRED, Reason.NETWORK}
)


def suppresses(reason: Reason) -> bool:
    """Put the recipient on the suppression list on this one failure?"""
    return reason in ADDRESS_GONE


def counts_toward_streak(reason: Reason) -> bool:
    """May this failure count toward N soft failures in a row (which then suppress)?"""
    return reason in RECIPIENT_SIDE


def sender_side(reason: Reason) -> bool:
    return reason in SENDER_SIDE


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str | None  # enhanced status code, from the report or read from the text
    reason: Reason


def classify(status: str | None, diagnostic: str | None) -> Verdict:
    """The reason for one failure, from its status code and the receiving server's text.

    The text wins over a generic code (``550 5.7.1 ... SPF check failed`` is an authentication failure, not
    a policy one); a code read from the text stands in when the report had none.
    """
    if status is not None and status.startswith("5.1.1"):
        return Verdict(status, Reason.USER_UNKNOWN)
    return Verdict(status, Reason.OTHER)
