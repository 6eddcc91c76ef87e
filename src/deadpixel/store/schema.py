"""Tables, defined once with SQLAlchemy Core for both SQLite and PostgreSQL.

Times are UTC seconds since the epoch as double precision: one type both databases store and compare the same
way, cheap to bucket by hour or day in SQL, and exact to well under a microsecond for centuries.
Messages carry counters (open count, first/last open) updated in the same transaction as each batch of opens,
so reports read one row per message instead of scanning events.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.types import TypeEngine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL needs 64 bits for event tables.
EventId = BigInteger().with_variant(Integer(), "sqlite")


def _serial(kind: type[TypeEngine[int]] | TypeEngine[int]) -> Column[int]:
    """The surrogate key ``id``, numbered by the database."""
    return Column("id", kind, primary_key=True, autoincrement=True)


def _time(name: str, *, nullable: bool = False, index: bool | None = None) -> Column[float]:
    """A moment: UTC seconds since the epoch, as every time in the store is (see above)."""
    return Column(name, Float, nullable=nullable, index=index)


def _counter(name: str) -> Column[int]:
    """A count the writes keep up to date; the database starts it at 0."""
    return Column(name, Integer, nullable=False, server_default="0")


campaigns = Table(
    "campaigns",
    metadata,
    _serial(Integer),
    Column("name", String(200), nullable=False, unique=True),
    _time("created_at"),
    # Read notices for the campaign's new messages: 0 none, 1 one notice per first read, 2 a daily digest
    # (deadpixel.store.notices); digest_through: reads up to this time are in a digest already.
    Column("notify", Integer, nullable=False, server_default="0"),
    Column("digest_through", Float, nullable=True),
)

messages = Table(
    "messages",
    metadata,
    # The public id that tokens carry: random, so it leaks neither volume nor neighbours.
    Column("id", String(16), primary_key=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    Column("recipient", String(320), nullable=True),
    Column("subject", Text, nullable=True),
    _time("created_at"),
    # Known only when deadpixel sent or relayed the message itself; hand-made pixels have none.
    _time("sent_at", nullable=True),
    # draft (composed, not yet accepted by SMTP), sent, or failed; only `sent` counts in reports.
    Column("status", String(8), nullable=False, server_default="sent"),
    _counter("open_count"),
    _time("first_open_at", nullable=True),
    _time("last_open_at", nullable=True),
    # Opens by verdict: human (incl. proxy), machine (prefetch, scanner) and the sender's own.
    _counter("human_open_count"),
    _counter("machine_open_count"),
    _counter("self_open_count"),
    Column("last_open_id", BigInteger, nullable=True),  # the newest stored open: the head of its chain
    # Opens past DEADPIXEL_OPEN_CAP in one minute: answered and counted here, not stored as events.
    _counter("capped_open_count"),
    # Clicks on tracked links, counted like opens; a human click also proves the message was opened.
    _counter("click_count"),
    _counter("human_click_count"),
    _counter("machine_click_count"),
    _counter("self_click_count"),
    _time("first_click_at", nullable=True),
    _time("last_click_at", nullable=True),
    # What came back (see deadpixel.bounces): hard or soft (None: no bounce seen), soft reports so far,
    # the latest report's time, words and reason (the vocabulary of deadpixel.bounces.reasons; NULL before
    # `bounces reclassify` for reports stored before reasons were), and when the recipient complained.
    Column("bounce", String(4), nullable=True),
    _counter("soft_bounce_count"),
    _time("bounced_at", nullable=True),
    Column("bounce_reason", Text, nullable=True),
    Column("bounce_reason_code", String(24), nullable=True),
    _time("complained_at", nullable=True),
    # Read notices (deadpixel.store.notices): 0 none, 1 a notice on the first human open, 2 in the campaign's
    # daily digest; read_notice_at is that first human open's time, set once, so a notice is made once.
    Column("notify", Integer, nullable=False, server_default="0"),
    Column("read_notice_at", Float, nullable=True),
    # The A/B test variant this message was sent as (deadpixel.store.abtests); None outside a test's test
    # share, including the winner's send to the rest.
    Column("variant", String(16), nullable=True),
    Index(None, "campaign_id"),
    Index(None, "recipient"),
    Index(None, "created_at"),
)
# A contact's messages are found by lower-cased address (deadpixel.store.contacts); an expression index,
# since the column keeps the address as it was sent.
Index("ix_messages_recipient_key", func.lower(messages.c.recipient))


def _request_columns() -> list[Column[object]]:
    """What every event kind keeps of its request, in this order (``deadpixel.store.events``)."""
    return [
        Column("ip", String(45), nullable=True),
        Column("user_agent", Text, nullable=True),
        Column("method", String(8), nullable=False),
        # A speculative-load hint the client sent (Purpose / Sec-Purpose / X-Moz), kept for reclassification.
        Column("purpose", String(32), nullable=True),
        # Enrichment, filled at ingest and rewritten by `deadpixel reclassify`.
        Column("client", String(64), nullable=True),
        Column("device", String(16), nullable=True),
        Column("os", String(64), nullable=True),
        Column("country", String(2), nullable=True),
        Column("region", String(128), nullable=True),
        Column("city", String(128), nullable=True),
        Column("asn", BigInteger, nullable=True),
        Column("network_owner", String(256), nullable=True),
        Column("kind", String(16), nullable=True),
        Column("reason", Text, nullable=True),
        Column("rule", String(32), nullable=True),
    ]


# No foreign key to messages: the hot path never reads the database, and a validly signed token for a
# message that was since erased must not fail the whole batch it was committed with.
opens = Table(
    "opens",
    metadata,
    _serial(EventId),
    Column("message_id", String(16), nullable=False),
    _time("at"),
    *_request_columns(),
    # The open of the same message stored just before this one: each message's opens form a chain from
    # ``messages.last_open_id`` (see deadpixel.store.chains). It replaces an index on message_id, whose
    # inserts land all over the index and, at a million opens, doubled the pixel's p99 latency.
    Column("prev_id", EventId, nullable=True),
    Index(None, "at"),
)

# The original URL of each tracked link, written when the message is composed. A click token carries only the
# message id and the link number, so the redirect target never travels in (or can be forged into) a URL.
links = Table(
    "links",
    metadata,
    Column("message_id", String(16), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("url", Text, nullable=False),
)

# Like opens: no foreign key, so a click on a message erased meanwhile cannot sink its batch.
clicks = Table(
    "clicks",
    metadata,
    _serial(EventId),
    Column("message_id", String(16), nullable=False),
    Column("link", Integer, nullable=False),
    _time("at"),
    *_request_columns(),
    Index(None, "message_id", "at"),
    Index(None, "at"),
)

# One row per campaign and mailbox, written before the message is handed to SMTP and updated after, so that
# a campaign can be run again after a crash, Ctrl-C or SMTP trouble and sends only what was not sent.
# status: sending (recorded, handed to SMTP), sent, failed (not delivered: a re-run tries again), pending
# (recorded but never attempted), uncertain (the connection broke after the message was transmitted).
campaign_recipients = Table(
    "campaign_recipients",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),  # lower-cased: one row per mailbox
    Column("line", Integer, nullable=False),  # the CSV line it came from in the run that last touched it
    Column("run_id", String(16), nullable=False),
    Column("message_id", String(16), nullable=True),  # None for an untracked copy
    Column("status", String(12), nullable=False),
    Column("error", Text, nullable=True),
    _time("updated_at"),
    # The random id inside this recipient's unsubscribe link; kept across re-runs.
    Column("unsubscribe_id", String(16), nullable=True, unique=True),
    Index(None, "campaign_id", "status"),
)

# Addresses that asked for no more campaign mail (lower-cased). Campaign sends skip them; `forget` keeps
# them, since the wish to receive nothing outlives the data about a person.
suppressions = Table(
    "suppressions",
    metadata,
    Column("address", String(320), primary_key=True),
    _time("created_at"),
    # one-click, unsubscribe-page, opt-out-report, cli, hard-bounce, soft-bounces, complaint
    Column("source", String(32), nullable=False),
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
)

# Bounce and complaint reports, one row per report and message, as they came in (the message row carries the
# summary). ``report_key`` makes a report seen twice (a re-delivery, a mailbox read again) count once.
bounces = Table(
    "bounces",
    metadata,
    _serial(EventId),
    Column("message_id", String(16), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    _time("at"),
    Column("kind", String(9), nullable=False),  # hard, soft, complaint or opt-out
    Column("status", String(16), nullable=True),  # the enhanced status code, e.g. 5.1.1
    Column("reason", Text, nullable=True),  # the receiving server's diagnostic, for the user
    # Why, in the vocabulary of deadpixel.bounces.reasons (user unknown, mailbox full, ...); rewritten by
    # `deadpixel bounces reclassify` from status and reason. NULL for complaints.
    Column("reason_code", String(24), nullable=True),
    Column("source", String(8), nullable=False),  # smtp (the listener) or imap (the mailbox)
    Column("report_key", String(64), nullable=False, unique=True),
    Index(None, "message_id"),
)

# Accounts that may log in (the relay's AUTH); see deadpixel.accounts.users for the password hashing.
users = Table(
    "users",
    metadata,
    _serial(Integer),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    _time("created_at"),
    # viewer, sender or owner (deadpixel.store.roles); accounts older than roles are owners
    Column("role", String(8), nullable=False, server_default="owner"),
)

# One row per message submitted to the relay and recipient: the tracked message made for that copy (None when
# the copy went out untracked, with the reason) and whether the upstream server took it. A client that
# resubmits after a dropped connection finds its rows here, so no copy gets a second message row and no
# copy the upstream already took is sent twice.
relayed = Table(
    "relayed",
    metadata,
    # SHA-256 of the account, the Message-ID header and the whole message (deadpixel.relay.message)
    Column("message_key", String(64), primary_key=True),
    Column("recipient", String(320), primary_key=True),  # lower-cased
    Column("account", String(64), nullable=False),
    Column("message_id", String(16), ForeignKey("messages.id", ondelete="SET NULL"), nullable=True),
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True),
    Column("status", String(8), nullable=False),  # sending, sent or failed
    Column("untracked", Text, nullable=True),  # why the copy went out without a pixel
    _time("updated_at"),
    Index(None, "campaign_id"),
)

# Spooled batches already replayed into the store (see deadpixel.track.spool): the marker is written in the
# batch's own transaction, so a batch is stored once even when its file outlives the commit.
spool_replays = Table(
    "spool_replays",
    metadata,
    Column("id", String(80), primary_key=True),
    _time("replayed_at"),
)

# Bearer tokens for /api/v1 (see deadpixel.store.api_tokens). Only a SHA-256 of each secret is kept: the
# secrets are 256 random bits, so a fast hash is as safe as a slow one and lets a request find its row by
# an index lookup. Revoked tokens stay, so `token list` still shows what existed and when it last worked.
api_tokens = Table(
    "api_tokens",
    metadata,
    _serial(Integer),
    Column("name", String(64), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    _time("created_at"),
    _time("last_used_at", nullable=True),
    _time("revoked_at", nullable=True),
    Column("role", String(8), nullable=False, server_default="owner"),  # as the users' role
)

# Rollups of opens for the dashboard's charts (see deadpixel.store.rollups): per campaign (0 for messages
# without one) and quarter of an hour, and per campaign and value of each breakdown. Kept off the pixel's
# write path: folded in from events newer than a watermark when they are read.
open_slots = Table(
    "open_slots",
    metadata,
    Column("campaign_id", Integer, primary_key=True, autoincrement=False),
    Column("slot", Integer, primary_key=True, autoincrement=False),  # floor(at / 900): UTC quarter hours
    Column("opens", Integer, nullable=False),
    Column("human", Integer, nullable=False),  # human and proxy
    Column("machine", Integer, nullable=False),  # prefetch and scanner
)

open_values = Table(
    "open_values",
    metadata,
    Column("campaign_id", Integer, primary_key=True, autoincrement=False),
    Column("field", String(8), primary_key=True),  # kind, client, device, os, country
    Column("value", String(64), primary_key=True),  # '' when unknown
    Column("opens", Integer, nullable=False),
)

# Per sent message with a send time: how long after it a person first opened it (a human or proxy open),
# so the time to first open is read from an index instead of every message row, and prefetches and
# scanners at delivery do not pass for readers.
first_human_opens = Table(
    "first_human_opens",
    metadata,
    Column("message_id", String(16), primary_key=True),
    Column("campaign_id", Integer, nullable=False),  # 0 for messages without one
    Column("wait", Float, nullable=False),  # seconds from sent_at to the first human or proxy open
    Index(None, "campaign_id", "wait"),
)

# How far the rollups have read the opens table: every id up to ``watermark`` is folded in, except the ids
# in rollup_gaps, which were not visible yet (a PostgreSQL transaction that had taken them had not
# committed) and are looked for again until they appear or are too old to be a transaction in flight.
rollup_state = Table(
    "rollup_state",
    metadata,
    Column("name", String(16), primary_key=True),
    Column("watermark", BigInteger, nullable=False),
    _time("updated_at"),
)

rollup_gaps = Table(
    "rollup_gaps",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    _time("noted_at"),
)

# Where to POST opens and clicks (see deadpixel.hooks). The secret signs every delivery, so it is kept as it
# is (the receiver holds the same one); it is shown once, when the webhook is added, and never listed.
webhooks = Table(
    "webhooks",
    metadata,
    _serial(Integer),
    Column("url", Text, nullable=False),
    Column("secret", String(64), nullable=False),
    Column("on_open", Boolean, nullable=False),
    Column("on_click", Boolean, nullable=False),
    _time("created_at"),
)

# The outbox: one row per event and webhook, written in the same transaction as the event itself, so an
# event is stored if and only if its deliveries are. No foreign key to webhooks: removing a webhook must
# never make a batch of opens fail; its rows are deleted with it, and a deliverer drops any it still meets.
# status: pending (due at next_attempt_at), delivered, failed (gave up after the last attempt). A deliverer
# owns a row while lease_until is in the future and lease_owner is its own random id.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _serial(EventId),
    Column("webhook_id", Integer, nullable=False),
    Column("event_id", String(32), nullable=False),  # the same for every webhook the event goes to
    Column("event", String(8), nullable=False),  # open, click
    Column("payload", Text, nullable=False),  # JSON: what the event row knew at commit time
    _time("created_at"),
    Column("status", String(10), nullable=False),
    _counter("attempts"),
    _time("next_attempt_at"),
    _time("lease_until", nullable=True),
    Column("lease_owner", String(32), nullable=True),
    _time("last_attempt_at", nullable=True),
    Column("last_status", Integer, nullable=True),  # the receiver's HTTP status, None when none answered
    Column("last_error", Text, nullable=True),
    # None for a webhook's delivery; "email" or "url" for a read notice (webhook_id 0), sent where the
    # operator's notify settings say at delivery time (deadpixel.hooks.notify).
    Column("target", String(8), nullable=True),
    Index(None, "status", "next_attempt_at"),
    Index(None, "webhook_id", "id"),
)

# The sign-in brake (deadpixel.store.sign_ins): failed and in-flight sign-ins per (client address, account)
# in a fixed window, shared by every server process and by the dashboard and the relay alike.
sign_in_tries = Table(
    "sign_in_tries",
    metadata,
    Column("client", String(64), primary_key=True),
    Column("account", String(64), primary_key=True),
    Column("tries", Integer, nullable=False),
    _time("window_start"),
    Index(None, "window_start"),
)

# Signed-in dashboard sessions (deadpixel.store.web_sessions). The cookie carries a random id; the store
# keeps only its SHA-256, so a copy of the table signs nobody in. Deleting the row ends the session.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_name", String(64), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    _time("created_at"),
    _time("expires_at", index=True),
)

# Where read notices go, as set on the dashboard's settings page; a name missing here falls back to its
# DEADPIXEL_NOTIFY_* setting (deadpixel.store.notices.targets).
notify_settings = Table(
    "notify_settings",
    metadata,
    Column("name", String(16), primary_key=True),  # email, url, format
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Who did what, and when (deadpixel.store.audit): an account's name, ``token:<name>`` or ``cli``.
audit_log = Table(
    "audit_log",
    metadata,
    _serial(Integer),
    _time("at"),
    Column("actor", String(80), nullable=False),
    Column("action", String(40), nullable=False),
    Column("target", String(200), nullable=False),
)

# Saved segments (deadpixel.store.segments): a name for a definition such as ``spring:non-openers``, which
# deadpixel.reports.segments evaluates again every time the segment is used; no list of addresses is kept.
segments = Table(
    "segments",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("definition", String(400), nullable=False),
    _time("created_at"),
)
# A/B tests (deadpixel.store.abtests): one row per campaign sent as a test, with what the winner's send
# needs later (the sender, the text template); metric human-open-rate or click-rate; seed fixes the random
# split so a re-run of the same list splits it the same way; pick_after (seconds) and decide_at say when
# the winner is to be sent; winner is set once, when it is chosen.
ab_tests = Table(
    "ab_tests",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("metric", String(16), nullable=False),
    Column("test_share", Float, nullable=False),
    Column("seed", String(32), nullable=False),
    Column("sender", Text, nullable=False),
    Column("text_template", Text, nullable=True),
    Column("utm_source", String(64), nullable=True),  # None: the links were not tagged
    _time("pick_after", nullable=True),
    _time("decide_at", nullable=True),  # the server's next check for a winner; None when none is due
    Column("decide_note", Text, nullable=True),  # why the last check sent nothing, or what it sent
    Column("decide_checks", Integer, nullable=False, server_default="0"),
    Column("winner", String(16), nullable=True),
    _time("winner_at", nullable=True),
    _time("created_at"),
)

# Each variant's subject and HTML templates, labelled A, B, C... in the order given.
ab_variants = Table(
    "ab_variants",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("label", String(16), primary_key=True),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
)

# The recipients left out of the test share, waiting for the winner: the list's row (JSON of its columns)
# and line, keyed by the lower-cased address. The winner's send reads them in line order.
ab_waiting = Table(
    "ab_waiting",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("line", Integer, nullable=False),
    Column("fields", Text, nullable=False),
)

# The HTML a campaign was sent with, once per campaign and variant ('' outside a test): the first stored
# message's copy before tracking (its links numbered as that message's links rows), for the click map.
sent_html = Table(
    "sent_html",
    metadata,
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("variant", String(16), primary_key=True),
    Column("message_id", String(16), nullable=False),
    Column("html", Text, nullable=False),
    _time("stored_at"),
)

# Campaigns the server sends (deadpixel.store.campaign_jobs): what to send, to whom, when, and how far it got.
# One job per stored campaign send. state: draft (stored, not scheduled), scheduled (due at due_at), sending
# (a server holds the lease: lease_owner until lease_until), paused, cancelled, done. The counts are the
# latest run's progress; note says why a job stopped or was paused by the server.
campaign_jobs = Table(
    "campaign_jobs",
    metadata,
    _serial(Integer),
    Column("campaign_id", Integer, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(12), nullable=False),
    _time("due_at", nullable=True),
    _time("created_at"),
    _time("updated_at"),
    Column("created_by", String(80), nullable=False),
    Column("sender", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=True),
    Column("options", Text, nullable=False),  # JSON: notify, rate, concurrency, retries, backoff, ...
    _counter("total"),
    _counter("sent"),
    _counter("failed"),
    _counter("skipped"),
    _counter("remaining"),
    Column("lease_owner", String(32), nullable=True),
    _time("lease_until", nullable=True),
    Column("note", Text, nullable=True),
    Index(None, "state", "due_at"),
    Index(None, "campaign_id"),
)

# A stored campaign's recipient rows, in their order (line: the row's number in the list it came from).
# fields: JSON object of template variables; due_at: the row goes no earlier (None: with the job); problem:
# why the row cannot be sent as it is (a CSV row with the wrong number of fields), reported when it is met.
campaign_job_rows = Table(
    "campaign_job_rows",
    metadata,
    Column("job_id", Integer, ForeignKey("campaign_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("line", Integer, primary_key=True, autoincrement=False),
    Column("email", Text, nullable=False),
    Column("fields", Text, nullable=False),
    Column("track", Boolean, nullable=False),
    _time("due_at", nullable=True),
    Column("problem", Text, nullable=True),
)

# Rows of a job that were not sent, and why (bad address, refused by SMTP, ...), as of its latest run.
campaign_job_problems = Table(
    "campaign_job_problems",
    metadata,
    _serial(Integer),
    Column("job_id", Integer, ForeignKey("campaign_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("line", Integer, nullable=False),
    Column("value", Text, nullable=False),
    Column("kind", String(12), nullable=False),
    Column("reason", Text, nullable=False),
    _time("at"),
    Index(None, "job_id", "line"),
)

# A campaign written in the dashboard, kept between previews and until it is sent (deadpixel.store.drafts):
# the content as typed and the recipient list as uploaded (CSV text), nothing derived.
campaign_drafts = Table(
    "campaign_drafts",
    metadata,
    _serial(Integer),
    Column("name", String(200), nullable=False),
    Column("sender", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("subject_b", Text, nullable=True),  # the A/B test's second subject
    Column("ab_share", Integer, nullable=True),  # percent of the list that gets the test
    Column("ab_wait_minutes", Integer, nullable=True),  # before the winner goes to the rest
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=True),
    Column("recipients_csv", Text, nullable=False),
    Column("created_by", String(80), nullable=False),
    _time("created_at"),
    _time("updated_at"),
)

# The audience (deadpixel.store.contacts): one row per mailbox, by the lower-cased address, with the spelling
# it came in, a name and any other fields as a JSON object of strings (merge fields for templates). The id
# names a contact in URLs, which never carry an address.
# A contact's state is not stored: it is read from the suppression list (subscribed when absent), so the
# list stays the one truth for unsubscribes, bounces and complaints, contact or not.
contacts = Table(
    "contacts",
    metadata,
    _serial(Integer),
    Column("address", String(320), nullable=False, unique=True),
    Column("spelling", String(320), nullable=False),
    Column("name", Text, nullable=True),
    Column("fields", Text, nullable=False, server_default="{}"),
    _time("created_at"),
    _time("updated_at"),
)

contact_tags = Table(
    "contact_tags",
    metadata,
    Column("address", String(320), ForeignKey("contacts.address", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index(None, "tag"),
)
