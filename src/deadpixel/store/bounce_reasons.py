"""The stored vocabulary of why a message was not delivered, and what each reason means for the recipient.

The values are stored (``bounces.reason_code``, ``messages.bounce_reason_code``), counted by the read side
and decided on by the bounce rules (``deadpixel.bounces.reasons``, which reads them from a server's text),
so they live here, below all three, as the event kinds do in ``store/events.py``.
"""

from __future__ import annotations

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
