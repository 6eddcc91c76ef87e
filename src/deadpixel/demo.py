"""``deadpixel demo``: a realistic campaign to look at before sending a real one.

A week-old newsletter to a few thousand made-up readers, whose opens and clicks go through the same write
path and the same verdict rules as real traffic: Apple Mail Privacy Protection fetching on delivery from
Apple's relay network, Microsoft's mail filtering scanning within seconds, Gmail's image proxy, and people
opening in Apple Mail, Outlook, Thunderbird and phones over the following days, some of them twice, a few
clicking. The addresses are in reserved example domains; nothing is sent anywhere.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from deadpixel.bounces.parse import Failure, Report
from deadpixel.bounces.record import record
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.store.clicks import write_clicks
from deadpixel.store.links import save_links
from deadpixel.store.messages import create_message
from deadpixel.store.schema import messages
from deadpixel.store.writes import write_opens

CAMPAIGN = "Demo: monthly newsletter"
DAY = 86400.0
LINKS = ["https://example.com/blog/whats-new", "https://example.com/pricing", "https://example.com/events"]

# Well-known shapes of user agents, each with where such requests come from.
APPLE_MAIL = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
IPHONE_MAIL = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17628; Pro)"
THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
ANDROID_GMAIL = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile"
)
APPLE_MPP = "Mozilla/5.0"
SCANNER = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.1; Trident/7.0; .NET4.0C; .NET4.0E)"

# Public addresses of readers in several countries, and of the networks machines fetch from.
READER_NETWORKS = ["81.2.69.", "2.16.23.", "31.13.72.", "62.210.16.", "78.47.0.", "89.160.20.", "185.60.216."]
APPLE_RELAY = "17.58."  # Apple's Private Relay egress, where MPP prefetches come from
EOP = "40.107."  # Microsoft Exchange Online Protection
GOOGLE_PROXY = "66.249.84."


@dataclass(frozen=True)
class Demo:
    campaign: str
    messages: int
    opens: int
    clicks: int


def seed(conn: Connection, classifier: OpenClassifier, messages: int = 2000, seed: int = 7) -> Demo:
    """Create the demo campaign in the caller's transaction, with its opens and clicks."""
    rng = random.Random(seed)
    sent_at = time.time() - 7 * DAY
    ids = [
        create_message(
            conn, recipient=f"reader{n}@example.com", subject="What's new this month", campaign=CAMPAIGN,
            sent_at=sent_at + n * 0.05,
        )
        for n in range(messages)
    ]  # fmt: skip
    save_links(conn, [(mid, LINKS) for mid in ids])
    opens = sorted(_opens(rng, ids, sent_at), key=lambda event: event.at)
    clicks = sorted(_clicks(rng, opens), key=lambda event: event.at)
    for start in range(0, len(opens), 2000):
        write_opens(conn, opens[start : start + 2000], classifier)
    if clicks:
        write_clicks(conn, clicks, classifier.clicks)
    _bounces_and_failures(conn, rng, ids, {event.message_id for event in opens}, sent_at)
    return Demo(CAMPAIGN, messages, len(opens), len(clicks))


# What comes back from a real list: mailboxes that no longer exist, full ones, a spam complaint or two,
# and a few sends the server refused outright (those are not counted as sent).
_HARD = [("5.1.1", "550 5.1.1 <{}>: Recipient address rejected: User unknown in virtual mailbox table")]
_SOFT = [("4.2.2", "452 4.2.2 <{}>: Mailbox full"), ("4.4.1", "421 4.4.1 Connection timed out")]


def _bounces_and_failures(
    conn: Connection, rng: random.Random, ids: list[str], opened: set[str], sent_at: float
) -> None:
    unopened = [mid for mid in ids if mid not in opened]
    rng.shuffle(unopened)
    hard, rest = unopened[: len(ids) // 50], unopened[len(ids) // 50 :]
    soft, rest = rest[: len(ids) // 100], rest[len(ids) // 100 :]
    failed = rest[: len(ids) // 200]
    complained = rng.sample(sorted(opened), k=min(3, len(opened)))
    when = sent_at + 60
    for kind, chosen, codes in (("hard", hard, _HARD), ("soft", soft, _SOFT)):
        for mid in chosen:
            recipient = conn.execute(select(messages.c.recipient).where(messages.c.id == mid)).scalar_one()
            status, text = rng.choice(codes)
            failure = Failure.of(recipient, recipient, kind == "hard", status, text.format(recipient))
            record(conn, Report("bounce", "demo", (failure,)), mid, source="demo", key=f"demo-{mid}",
                   soft_limit=3, at=when + rng.uniform(0, 3600))  # fmt: skip
    for mid in complained:
        record(conn, Report("complaint", "a spam complaint (demo)"), mid, source="demo", key=f"demo-c-{mid}",
               soft_limit=3, at=when + rng.uniform(DAY, 3 * DAY))  # fmt: skip
    if failed:
        conn.execute(update(messages).where(messages.c.id.in_(failed)).values(status="failed", sent_at=None))


def _ip(rng: random.Random, prefix: str) -> str:
    missing = 4 - prefix.count(".")
    return prefix + ".".join(str(rng.randint(1, 254)) for _ in range(missing))


def _opens(rng: random.Random, ids: list[str], sent_at: float) -> Iterator[OpenEvent]:
    for mid in ids:
        delivered = sent_at + rng.uniform(1, 30)
        mailbox = rng.random()
        if mailbox < 0.35:  # an Apple Mail user with Mail Privacy Protection: fetched on delivery
            yield OpenEvent(mid, delivered + rng.uniform(2, 600), _ip(rng, APPLE_RELAY), APPLE_MPP, "GET")
        if 0.35 <= mailbox < 0.5:  # a company mailbox behind Microsoft's filtering
            yield OpenEvent(mid, delivered + rng.uniform(0.5, 4), _ip(rng, EOP), SCANNER, "GET")
        if rng.random() > 0.45:
            continue  # this reader never opens it
        when = delivered + min(6 * DAY, rng.lognormvariate(8.5, 1.6))  # most within a day, a tail all week
        if 0.5 <= mailbox < 0.75:  # a Gmail user: the proxy fetches on their open
            yield OpenEvent(mid, when, _ip(rng, GOOGLE_PROXY), GMAIL_PROXY, "GET")
            continue
        client = rng.choice([APPLE_MAIL, IPHONE_MAIL, OUTLOOK, OUTLOOK, THUNDERBIRD, ANDROID_GMAIL])
        address = _ip(rng, rng.choice(READER_NETWORKS))
        yield OpenEvent(mid, when, address, client, "GET")
        if rng.random() < 0.3:  # opened again later
            yield OpenEvent(mid, when + rng.uniform(600, DAY), address, client, "GET")


def _clicks(rng: random.Random, opens: list[OpenEvent]) -> Iterator[ClickEvent]:
    for event in opens:
        if event.user_agent in (APPLE_MPP, SCANNER, GMAIL_PROXY) or rng.random() > 0.18:
            continue
        link = rng.randrange(len(LINKS))
        yield ClickEvent(
            event.message_id, link, event.at + rng.uniform(5, 300), event.ip, event.user_agent, "GET"
        )
