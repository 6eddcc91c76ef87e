"""Why a message was not delivered, in a fixed vocabulary, and what follows from each reason.

The reason decides what deadpixel does about the recipient. Only a failure that says the *address* does not
exist suppresses it; a full or disabled mailbox, mail the receiver filtered, and every failure that is the
sender's own problem (authentication, reputation, content, rate) never do. A sender whose SPF record breaks
for an hour must not lose every recipient it mailed in that hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deadpixel.bounces.wording import reason_in_text, says_it_gave_up
from deadpixel.store.bounce_reasons import (
    ADDRESS_GONE,
    RECIPIENT_SIDE,
    SENDER_SIDE,
    Reason,
    counts_toward_streak,
    sender_side,
    suppresses,
)

__all__ = [
    "ADDRESS_GONE", "RECIPIENT_SIDE", "SENDER_SIDE", "Reason", "Verdict",
    "classify", "counts_toward_streak", "sender_side", "suppresses",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str | None  # enhanced status code, from the report or read from the text
    reason: Reason


MAX_TEXT = 2000  # characters of the server's text read; a reason is stated near its start
# RFC 3463 (and its later additions) subject.detail -> reason; the fallback when the text says nothing known.
CODES: dict[str, Reason] = {
    "1.1": Reason.USER_UNKNOWN, "1.2": Reason.DOMAIN_NOT_FOUND, "1.3": Reason.USER_UNKNOWN,
    "1.6": Reason.USER_UNKNOWN, "1.7": Reason.POLICY, "1.8": Reason.POLICY, "1.10": Reason.DOMAIN_NOT_FOUND,
    "2.1": Reason.MAILBOX_DISABLED, "2.2": Reason.MAILBOX_FULL, "2.3": Reason.MESSAGE_TOO_BIG,
    "2.4": Reason.SYSTEM,
    "3.0": Reason.SYSTEM, "3.1": Reason.SYSTEM, "3.2": Reason.SYSTEM, "3.3": Reason.SYSTEM,
    "3.4": Reason.MESSAGE_TOO_BIG, "3.5": Reason.SYSTEM,
    "4.0": Reason.NETWORK, "4.1": Reason.NETWORK, "4.2": Reason.NETWORK, "4.3": Reason.NETWORK,
    "4.4": Reason.NETWORK, "4.5": Reason.SYSTEM, "4.6": Reason.NETWORK, "4.7": Reason.EXPIRED,
    "5.3": Reason.RATE_LIMITED,
    "6.0": Reason.SPAM, "6.1": Reason.SPAM, "6.2": Reason.SPAM, "6.3": Reason.SPAM, "6.4": Reason.SPAM,
    "6.5": Reason.SPAM,
    "7.0": Reason.POLICY, "7.1": Reason.POLICY, "7.2": Reason.POLICY, "7.3": Reason.POLICY,
    "7.4": Reason.POLICY, "7.5": Reason.POLICY, "7.6": Reason.POLICY, "7.7": Reason.POLICY,
    "7.8": Reason.AUTHENTICATION, "7.9": Reason.AUTHENTICATION, "7.10": Reason.POLICY,
    "7.11": Reason.POLICY, "7.12": Reason.AUTHENTICATION, "7.13": Reason.AUTHENTICATION,
    "7.14": Reason.AUTHENTICATION, "7.15": Reason.POLICY, "7.16": Reason.MESSAGE_TOO_BIG,
    "7.17": Reason.USER_UNKNOWN, "7.18": Reason.DOMAIN_NOT_FOUND,
    "7.20": Reason.AUTHENTICATION, "7.21": Reason.AUTHENTICATION, "7.22": Reason.AUTHENTICATION,
    "7.23": Reason.AUTHENTICATION, "7.24": Reason.AUTHENTICATION, "7.25": Reason.BLOCKED,
    "7.26": Reason.AUTHENTICATION, "7.27": Reason.AUTHENTICATION, "7.28": Reason.RATE_LIMITED,
    "7.29": Reason.AUTHENTICATION, "7.30": Reason.POLICY,
}  # fmt: skip
# A permanent 5.4.4 ("unable to route") says the domain has no mail host; a temporary one is DNS trouble.
PERMANENT_CODES: dict[str, Reason] = {"4.4": Reason.DOMAIN_NOT_FOUND}
# The detail code that stands for each reason when a code is built from a basic reply code (550) or from a
# report's generic X.0.0: the class comes from the report, the rest from the reason.
DETAIL: dict[Reason, str] = {
    Reason.USER_UNKNOWN: "1.1", Reason.DOMAIN_NOT_FOUND: "1.2", Reason.MAILBOX_DISABLED: "2.1",
    Reason.MAILBOX_FULL: "2.2", Reason.MESSAGE_TOO_BIG: "3.4", Reason.BLOCKED: "7.1", Reason.SPAM: "7.1",
    Reason.AUTHENTICATION: "7.1", Reason.POLICY: "7.1", Reason.RATE_LIMITED: "7.0", Reason.EXPIRED: "4.7",
    Reason.NETWORK: "4.0", Reason.SYSTEM: "3.0", Reason.OTHER: "0.0",
}  # fmt: skip
# Reasons the text may give that a code naming the address (5.1.1 and kin) outweighs: words that also turn
# up in the boilerplate of plain "no such user" replies. Blocklists and authentication are not among them.
WEAKER_THAN_ADDRESS_CODE = frozenset(
    {Reason.SPAM, Reason.POLICY, Reason.RATE_LIMITED, Reason.SYSTEM, Reason.OTHER}
)
ENHANCED = re.compile(r"(?<![\w.])([245])\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
BASIC = re.compile(r"(?<![\w.#-])(4[25][0-5]|5[0-5][0-6])(?=[\s-]|$)")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})


# An address in the text says who, never why: "blocked@example.org" or "rate-limited@..." is no reason.
ADDRESS = re.compile(r"[^\s<>()\[\]@\"',;:]{1,64}@[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){0,8}")


def normalise(text: str) -> str:
    """Lower case, one space between words, plain apostrophes, addresses blanked, bounded: what the phrase
    tables match."""
    return ADDRESS.sub("someone", " ".join(text[:MAX_TEXT].translate(APOSTROPHES).lower().split()))


def _enhanced(status: str | None) -> tuple[str, str] | None:
    """("5", "1.1") from "5.1.1", or None for anything that is no enhanced status code."""
    match = ENHANCED.fullmatch(status.strip()) if status else None
    if match is None:
        return None
    return match.group(1), f"{int(match.group(2))}.{int(match.group(3))}"


def _code_reason(klass: str, detail: str) -> Reason | None:
    if klass == "5" and detail in PERMANENT_CODES:
        return PERMANENT_CODES[detail]
    return CODES.get(detail)


# Reasons that say only that the attempts failed: when the notice says the sender gave up (or is still
# retrying), the failure is reported as expired. Sender-side reasons and reasons about the mailbox stay.
GIVE_WAY_TO_EXPIRED = frozenset({Reason.NETWORK, Reason.OTHER})


def classify(
    status: str | None, diagnostic: str | None, permanent: bool | None = None, delayed: bool = False
) -> Verdict:
    """The reason for one failure, from its status code and the receiving server's text.

    The text wins over the code, with two exceptions: a code that names the address (5.1.1, 5.1.2, ...)
    outweighs loose words (spam, policy, rate) that plain "no such user" replies also carry, and an expiry
    code (4.4.7) outweighs the network error that made the retries run out. A blocklist or a failed
    SPF/DKIM/DMARC check in the text wins over every code, so no sender-side failure suppresses.

    The status is the report's when it is specific; else the enhanced code in the text ("550 5.1.1",
    "550-5.7.26", "#5.1.1"); else one built from the class (of a generic X.0.0 in the report, of a basic
    reply code such as "550" in the text, or of ``permanent`` when the text gave a reason) and the
    reason's own detail code (550 + "user unknown" -> 5.1.1). With no class to go by, the status stays None.
    A specific code in the text wins over a generic X.0.0 in the report even when their classes differ
    (Exim reports "5.0.0" for a "451 4.7.1" it gave up on).

    A network failure, or one with no known reason, is ``expired`` when the sending side gave up: the text
    says so ("retry timeout exceeded", "delivery time expired", ...), the report is a delay notice
    (``delayed``), or a permanent failure carries a transient code (4.x.x, Gmail's "TEMP_FAILURE").
    """
    text = normalise(diagnostic) if diagnostic else ""
    given = _enhanced(status)
    if given is not None and given[1] == "0.0":
        klass: str | None = given[0]
        given = None
    else:
        klass = given[0] if given else None
    if given is None and text:
        match = ENHANCED.search(text)
        if match is not None:
            given = match.group(1), f"{int(match.group(2))}.{int(match.group(3))}"
    if klass is None and given is None:
        basic = BASIC.search(text)
        if basic is not None:
            klass = basic.group(1)[0]
    found = reason_in_text(text) if text else None
    text_reason = Reason(found) if found is not None else None
    code_reason = _code_reason(*given) if given is not None else None
    reason = _settle(text_reason, code_reason)
    transient = (given[0] if given else klass) == "4" or "temp_failure" in text
    gave_up = delayed or (permanent is True and transient) or (bool(text) and says_it_gave_up(text))
    if gave_up and (reason in GIVE_WAY_TO_EXPIRED or (reason is Reason.SYSTEM and says_it_gave_up(text))):
        reason = Reason.EXPIRED
    if klass is None and given is None and reason is not Reason.OTHER and permanent is not None:
        klass = "5" if permanent else "4"  # a code is built from what the notice says, never from nothing
    if given is not None:
        return Verdict(f"{given[0]}.{given[1]}", reason)
    if klass is not None:
        return Verdict(f"{klass}.{DETAIL[reason]}", reason)
    return Verdict(None, reason)


def _settle(text: Reason | None, code: Reason | None) -> Reason:
    if text is None:
        return code or Reason.OTHER
    if code in ADDRESS_GONE and text in WEAKER_THAN_ADDRESS_CODE:
        return code
    if code is Reason.EXPIRED and text is Reason.NETWORK:
        return code
    return text
