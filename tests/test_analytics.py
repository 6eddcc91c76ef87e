"""Every analytics number checked exactly against a small store built by hand, on SQLite and PostgreSQL, and
the charts' rollups checked against the events they summarise, whatever order the events commit in."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Connection, Engine, func, select, update

from deadpixel.config import Settings
from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS, ClickEvent, OpenEvent
from deadpixel.reclassify import reclassify
from deadpixel.reports import analytics
from deadpixel.store import maintenance, rollups
from deadpixel.store.clicks import write_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.links import save_links
from deadpixel.store.messages import create_message
from deadpixel.store.schema import (
    first_human_opens,
    messages,
    open_slots,
    open_values,
    opens,
    rollup_gaps,
    rollup_state,
)
from deadpixel.store.writes import write_opens

from .conftest import Server
from .helpers import make_pixels

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 09:00 in Berlin (UTC+1 in March)
BERLIN = ZoneInfo("Europe/Berlin")
URL1, URL2 = "https://example.com/one", "https://example.com/two"


class Labelled:
    """A row builder whose verdict and client come from the user agent, "kind/client/device/os/country", so
    a test says exactly what each open is while the rows still go through the real write path."""

    def enrich(self, event: OpenEvent, sent_at: float | None) -> dict[str, Any]:
        kind, client, device, os, country = (event.user_agent or "////").split("/")
        return {
            "kind": kind or None, "client": client or None, "device": device or None, "os": os or None,
            "country": country or None, "region": None, "city": None, "asn": None, "network_owner": None,
            "reason": "test", "rule": "test",
        }  # fmt: skip

    def rows(self, events: Sequence[OpenEvent], sent_at: dict[str, float]) -> list[dict[str, Any]]:
        return [{**event._asdict(), **self.enrich(event, None)} for event in events]

    window = 0.0  # clicks: no neighbour rules (``deadpixel.store.clicks.ClickRowBuilder``)
    settle = 0.0

    def addresses(self, events: Sequence[ClickEvent]) -> set[str]:
        return set()

    def click_rows(
        self, events: Sequence[ClickEvent], sent_at: Any, earlier: Any = (), opened_at: Any = None
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        return [{**event._asdict(), **self.enrich(event.as_open(), None)} for event in events], []


LABELS = Labelled()
HUMAN_TB = "human/Thunderbird/desktop/Linux/DE"
HUMAN_IOS = "human/Apple Mail/mobile/iOS/FR"
PREFETCH = "prefetch/Apple Mail/unknown//US"
SCANNER = "scanner////US"
SELF = "self/Thunderbird/desktop/Linux/DE"


@pytest.fixture
def engines(settings: Settings) -> Any:
    reader = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    yield reader, writer
    reader.dispose()
    writer.dispose()


def opened(message_id: str, seconds: float, agent: str) -> OpenEvent:
    return OpenEvent(message_id, T0 + seconds, "192.0.2.1", agent, "GET")


def build(writer: Engine) -> dict[str, str]:
    """Six messages in "spring" (f without a send time) and one in "other", with their opens and clicks."""
    with writer.begin() as conn:
        ids = {
            name: create_message(conn, recipient=f"{name}@example.com", campaign="spring", sent_at=T0)
            for name in "abcde"
        }
        ids["f"] = create_message(conn, recipient="f@Ölpreis.example.org", campaign="spring")
        ids["x"] = create_message(conn, recipient="x@example.com", campaign="other", sent_at=T0)
        save_links(conn, [(mid, [URL1, URL2]) for mid in ids.values()])
        events = [
            opened(ids["a"], 600, HUMAN_TB),
            opened(ids["a"], 86400 + 3600, HUMAN_TB),
            opened(ids["b"], 30, PREFETCH),
            opened(ids["b"], 7200, HUMAN_IOS),
            opened(ids["c"], 5, SCANNER),
            opened(ids["e"], 100, SELF),
            opened(ids["f"], 5000, HUMAN_IOS),
            opened(ids["x"], 50, HUMAN_TB),
        ]
        write_opens(conn, events, LABELS)
        write_clicks(
            conn,
            [
                ClickEvent(ids["d"], 0, T0 + 3 * 3600, "192.0.2.9", HUMAN_TB, "GET"),
                ClickEvent(ids["a"], 1, T0 + 700, "192.0.2.1", HUMAN_TB, "GET"),
                ClickEvent(ids["c"], 0, T0 + 6, "192.0.2.7", SCANNER, "GET"),
            ],
            LABELS,
        )
    rollups.catch_up(writer)
    return ids


def test_the_headline_numbers_follow_their_definitions(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with reader.connect() as conn:
        got = analytics.report(conn, "spring")
    # opened: a, b, c (scanner only), d (a human click proves it), f; e only by its sender
    assert (got["sent"], got["unique_opens"], got["human_opens"], got["machine_opens"]) == (6, 5, 4, 1)
    assert (got["total_opens"], got["unique_clicks"], got["total_clicks"]) == (7, 2, 3)
    assert got["open_rate"] == 5 / 6 and got["human_open_rate"] == 4 / 6
    assert got["machine_open_rate"] == 1 / 6 and got["opens_per_opener"] == 7 / 5
    assert got["click_rate"] == 2 / 6 and got["click_to_open_rate"] == 2 / 5


def test_time_to_first_open_waits_for_a_person(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with reader.connect() as conn:
        waits = analytics.time_to_first_open(conn, "spring")
        everything = analytics.time_to_first_open(conn, None)
    # a at 600 s; b at 7,200 s (its prefetch at 30 s is no reader); not c (a scanner), d (a click, no open),
    # e (only its sender) or f (no send time)
    assert waits["messages"] == 2 and waits["median_seconds"] == (600 + 7200) / 2
    counts = {bucket["label"]: bucket["messages"] for bucket in waits["buckets"]}
    assert counts["5-15 min"] == 1 and counts["1-3 h"] == 1 and sum(counts.values()) == 2
    assert waits["buckets"][-1]["below_seconds"] is None
    assert everything["messages"] == 3 and everything["median_seconds"] == 600  # x at 50 s too


def test_opens_over_time_and_the_heatmap_are_in_the_configured_zone(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with reader.connect() as conn:
        berlin = analytics.opens_over_time(conn, "spring", BERLIN)
        heat_berlin = analytics.heatmap(conn, "spring", BERLIN)
        heat_utc = analytics.heatmap(conn, "spring", ZoneInfo("UTC"))
    hourly = berlin["hourly"]
    assert len(hourly) == 48  # two local days with opens, both hourly
    assert hourly[0]["hour"] == "2026-03-02T00:00+01:00"
    assert hourly[9] == {"hour": "2026-03-02T09:00+01:00", "opens": 4, "human": 1, "machine": 2}  # + e's own
    assert hourly[10] == {"hour": "2026-03-02T10:00+01:00", "opens": 1, "human": 1, "machine": 0}
    assert hourly[11]["opens"] == 1 and hourly[34]["opens"] == 1
    assert sum(h["opens"] for h in hourly) == 7
    assert berlin["daily"] == [
        {"day": "2026-03-02", "opens": 6, "human": 3, "machine": 2},
        {"day": "2026-03-03", "opens": 1, "human": 1, "machine": 0},
    ]
    nonzero = {(d, h): n for d, row in enumerate(heat_berlin["cells"]) for h, n in enumerate(row) if n}
    assert nonzero == {(0, 9): 4, (0, 10): 1, (0, 11): 1, (1, 10): 1}
    nonzero_utc = {(d, h): n for d, row in enumerate(heat_utc["cells"]) for h, n in enumerate(row) if n}
    assert nonzero_utc == {(0, 8): 4, (0, 9): 1, (0, 10): 1, (1, 9): 1}
    assert heat_berlin["weekdays"][0] == "Mon" and heat_berlin["timezone"] == "Europe/Berlin"


def test_a_campaign_spanning_weeks_is_hourly_for_three_days_then_daily(
    engines: tuple[Engine, Engine],
) -> None:
    reader, writer = engines
    with writer.begin() as conn:
        mid = create_message(conn, recipient="late@example.com", campaign="long", sent_at=T0)
        write_opens(conn, [opened(mid, 0, HUMAN_TB), opened(mid, 20 * 86400, HUMAN_TB)], LABELS)
    rollups.catch_up(writer)
    with reader.connect() as conn:
        series = analytics.opens_over_time(conn, "long", ZoneInfo("UTC"))
    assert len(series["hourly"]) == 72 and len(series["daily"]) == 21
    assert series["daily"][0]["opens"] == series["daily"][20]["opens"] == 1
    assert sum(d["opens"] for d in series["daily"][1:20]) == 0


def test_breakdowns_and_top_links(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with reader.connect() as conn:
        kinds = analytics.breakdown(conn, "spring", "kind")
        clients = analytics.breakdown(conn, "spring", "client")
        systems = analytics.breakdown(conn, "spring", "os")
        links_ = analytics.top_links(conn, "spring")
        with pytest.raises(ValueError):
            analytics.breakdown(conn, "spring", "password")
    assert kinds == [
        {"value": "human", "opens": 4}, {"value": "prefetch", "opens": 1},
        {"value": "scanner", "opens": 1}, {"value": "self", "opens": 1},
    ]  # fmt: skip
    assert clients == [
        {"value": "Apple Mail", "opens": 3},
        {"value": "Thunderbird", "opens": 3},
        {"value": None, "opens": 1},
    ]
    assert {row["value"]: row["opens"] for row in systems} == {"Linux": 3, "iOS": 2, None: 2}
    assert links_ == [
        {"url": URL1, "clicks": 2, "human_clicks": 1, "unique_clickers": 1},
        {"url": URL2, "clicks": 1, "human_clicks": 1, "unique_clickers": 1},
    ]


def test_recipients_are_searched_sorted_and_paged(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    ids = build(writer)
    name = {mid: key for key, mid in ids.items()}
    with reader.connect() as conn:

        def page(**view: Any) -> tuple[list[str], int]:
            rows, total = analytics.recipients(conn, "spring", analytics.RecipientView(**view))
            return [name[row["id"]] for row in rows], total

        by_status, total = page()
        assert total == 6
        assert [set(by_status[:2]), set(by_status[2:4]), by_status[4:]] == [
            {"a", "d"},
            {"b", "f"},
            ["c", "e"],
        ]
        rows, _ = analytics.recipients(
            conn, "spring", analytics.RecipientView(sort="recipient", descending=False)
        )
        assert [r["recipient_status"] for r in rows] == [
            "clicked", "opened", "machine only", "clicked", "not opened", "opened",
        ]  # fmt: skip
        assert page(sort="opens")[0][:2] in (["a", "b"], ["b", "a"])
        first_opens = page(sort="first_open", descending=False)[0]
        assert first_opens[:4] == ["c", "b", "e", "a"] and set(first_opens[4:]) == {"f", "d"}
        assert page(sort="first_open")[0][:4] == ["f", "a", "e", "b"]  # never opened last, either way
        assert page(search="B@EXAMPLE") == (["b"], 1)
        assert page(search="example.org") == (["f"], 1)
        assert page(search="Ölpreis") == (["f"], 1)
        folds_unicode = conn.dialect.name == "postgresql"  # SQLite's lower() folds ASCII letters only
        assert page(search="ölpreis") == ((["f"], 1) if folds_unicode else ([], 0))
        assert page(search="%") == ([], 0) and page(search="_") == ([], 0)  # no wildcards
        first = page(sort="recipient", descending=False, per_page=4)
        second = page(sort="recipient", descending=False, per_page=4, page=2)
        assert (first, second) == ((["a", "b", "c", "d"], 6), (["e", "f"], 6))
        assert page(page=9) == ([], 6)
        with pytest.raises(analytics.UnknownCampaign):
            page_of_nothing = analytics.RecipientView()
            analytics.recipients(conn, "no such campaign", page_of_nothing)


def test_the_whole_store_is_every_campaign_together(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with reader.connect() as conn:
        everything = analytics.campaign_stats(conn, None, ZoneInfo("UTC"))
        other = analytics.campaign_stats(conn, "other", ZoneInfo("UTC"))
    assert everything["total_opens"] == 8 and other["total_opens"] == 1
    assert sum(map(sum, everything["heatmap"]["cells"])) == 8
    assert other["breakdowns"]["kind"] == [{"value": "human", "opens": 1}]
    assert other["top_links"] == [] and other["time_to_first_open"]["median_seconds"] == 50


# --- the rollups agree with the events ------------------------------------------------------------------


def from_events(conn: Connection) -> tuple[Counter[tuple[int, int, str]], Counter[tuple[int, str, str]]]:
    """What the rollups should hold, computed from every stored open."""
    rows = conn.execute(
        select(func.coalesce(messages.c.campaign_id, 0), opens.c.at, *(opens.c[f] for f in rollups.FIELDS))
        .select_from(opens.outerjoin(messages, messages.c.id == opens.c.message_id))
    ).all()  # fmt: skip
    slots: Counter[tuple[int, int, str]] = Counter()
    values: Counter[tuple[int, str, str]] = Counter()
    for campaign, at, *fields in rows:
        slot = int(at // rollups.SLOT)
        slots[campaign, slot, "opens"] += 1
        slots[campaign, slot, "human"] += fields[0] in HUMAN_KINDS
        slots[campaign, slot, "machine"] += fields[0] in MACHINE_KINDS
        for field, value in zip(rollups.FIELDS, fields, strict=True):
            values[campaign, field, value or ""] += 1
    return +slots, +values


def from_rollups(conn: Connection) -> tuple[Counter[tuple[int, int, str]], Counter[tuple[int, str, str]]]:
    slots: Counter[tuple[int, int, str]] = Counter()
    for row in conn.execute(select(open_slots)):
        for name in ("opens", "human", "machine"):
            slots[row.campaign_id, row.slot, name] += getattr(row, name)
    values = Counter({(r.campaign_id, r.field, r.value): r.opens for r in conn.execute(select(open_values))})
    return +slots, +values


def first_human_waits(conn: Connection) -> dict[str, tuple[int, float]]:
    """Each sent message's first human or proxy open after its send time, from the events."""
    m = messages.c
    query = (
        select(m.id, func.coalesce(m.campaign_id, 0), func.min(opens.c.at) - m.sent_at)
        .select_from(opens.join(messages, m.id == opens.c.message_id))
        .where(opens.c.kind.in_(HUMAN_KINDS), m.sent_at.is_not(None), m.status == "sent")
        .group_by(m.id, m.campaign_id, m.sent_at)
    )
    return {mid: (campaign, wait) for mid, campaign, wait in conn.execute(query)}


def assert_rollups_match(engine: Engine) -> None:
    with engine.connect() as conn:
        assert from_rollups(conn) == from_events(conn)
        stored = {r.message_id: (r.campaign_id, r.wait) for r in conn.execute(select(first_human_opens))}
        assert stored == first_human_waits(conn)


def test_late_and_forgotten_opens_and_reclassify_keep_the_rollups_true(
    engines: tuple[Engine, Engine], settings: Settings
) -> None:
    reader, writer = engines
    ids = build(writer)
    assert_rollups_match(reader)
    with writer.begin() as conn:  # a spool replay: old opens stored late, under new ids
        write_opens(conn, [opened(ids["c"], -40 * 86400, HUMAN_TB), opened(ids["x"], 9, SCANNER)], LABELS)
    with reader.connect() as conn:
        assert rollups.pending(conn)
    assert rollups.catch_up(writer, reader) == 2
    assert_rollups_match(reader)
    with reader.connect() as conn:
        assert not rollups.pending(conn)
        assert analytics.opens_over_time(conn, "spring", ZoneInfo("UTC"))["daily"][0]["opens"] == 1
    assert rollups.catch_up(writer, reader) == 0

    with writer.begin() as conn:  # the newest opens go, then SQLite hands their ids out again
        maintenance.forget_recipient(conn, "x@example.com")
        write_opens(conn, [opened(ids["a"], 50, HUMAN_IOS)], LABELS)
    rollups.catch_up(writer, reader)
    assert_rollups_match(reader)

    with writer.begin() as conn:
        reclassify(conn, LABELS)  # type: ignore[arg-type]
        assert conn.execute(select(func.count()).select_from(open_slots)).scalar_one() == 0
    rollups.catch_up(writer, reader)
    assert_rollups_match(reader)


def test_rollups_fold_in_chunks(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    build(writer)
    with writer.begin() as conn:
        rollups.reset(conn)
    folded = []
    while True:
        with writer.begin() as conn:
            n, more = rollups.fold(conn, chunk=3)
        folded.append(n)
        if not more:
            break
    assert folded == [3, 3, 2]
    assert_rollups_match(reader)


def test_a_background_catch_up_rests_between_chunks(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = engines
    build(writer)
    with writer.begin() as conn:
        rollups.reset(conn)
    rests: list[float] = []
    monkeypatch.setattr(rollups.time, "sleep", rests.append)
    assert rollups.catch_up(writer, reader, chunk=3, rest=2.0) == 8
    assert len(rests) == 2 and all(pause > 0 for pause in rests)  # after each full chunk, not the last
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_each_batch_folds_itself_once_the_rollups_are_caught_up(
    engines: tuple[Engine, Engine],
) -> None:
    reader, writer = engines
    ids = build(writer)
    folds = rollups.WriterRollups(busy_gap=0)  # light load: however close together, each batch is written
    with writer.begin() as conn:
        write_opens(
            conn, [opened(ids["b"], 60, HUMAN_TB), opened(ids["x"], 70, PREFETCH)], LABELS, folds=folds
        )
    with reader.connect() as conn:
        assert not rollups.pending(conn)  # folded in the batch's own transaction
    assert_rollups_match(reader)

    with writer.begin() as conn:  # rollups behind (as after reclassify): the batch waits for the fold
        rollups.reset(conn)
        write_opens(conn, [opened(ids["c"], 80, HUMAN_IOS)], LABELS, folds=folds)
        assert conn.execute(select(func.count()).select_from(open_slots)).scalar_one() == 0
    assert rollups.catch_up(writer, reader) == 11
    assert_rollups_match(reader)

    with writer.begin() as conn:  # the newest opens go and their ids are handed out again
        maintenance.forget_recipient(conn, "c@example.com")
        write_opens(conn, [opened(ids["a"], 90, HUMAN_IOS)], LABELS, folds=folds)
    with reader.connect() as conn:
        assert not rollups.pending(conn)
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_under_load_the_writer_holds_its_counts_back_and_never_counts_twice(
    engines: tuple[Engine, Engine],
) -> None:
    reader, writer = engines
    ids = build(writer)
    # Batches of two or more are held back; time between batches does not count here.
    folds = rollups.WriterRollups(hold_from=2, busy_gap=0, interval=3600)

    def batch(*events: OpenEvent) -> None:
        with writer.begin() as conn:
            write_opens(conn, list(events), LABELS, folds=folds)

    def slots_total() -> int:
        with reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(open_slots.c.opens), 0))).scalar_one())

    before = slots_total()
    batch(opened(ids["a"], 10, HUMAN_TB), opened(ids["b"], 20, PREFETCH))
    batch(opened(ids["x"], 30, HUMAN_IOS), opened(ids["x"], 35, SCANNER))
    assert slots_total() == before
    with reader.connect() as conn:
        assert rollups.pending(conn)  # held-back opens are above the watermark like any others
    batch(opened(ids["c"], 40, SCANNER))  # a small batch: the load is light, everything is written
    assert slots_total() == before + 5
    with reader.connect() as conn:
        assert not rollups.pending(conn)
    assert_rollups_match(reader)

    batch(opened(ids["a"], 50, HUMAN_IOS), opened(ids["b"], 55, HUMAN_TB))
    assert rollups.catch_up(writer, reader) == 2  # a page view folds the held-back opens itself
    batch(opened(ids["b"], 60, HUMAN_TB), opened(ids["d"], 65, HUMAN_TB))
    with reader.connect() as conn:  # so the writer dropped what it held (nothing counts twice) and,
        assert not rollups.pending(conn)  # folded under, writes with every batch for a while
    assert_rollups_match(reader)

    folds = rollups.WriterRollups(hold_from=2, busy_gap=0, interval=3600)
    batch(opened(ids["c"], 70, HUMAN_TB), opened(ids["d"], 75, HUMAN_IOS))
    assert slots_total() == before + 9
    with writer.begin() as conn:  # `forget` deletes an open the writer holds counts of
        maintenance.forget_recipient(conn, "c@example.com")
    batch(opened(ids["a"], 80, HUMAN_TB))
    with reader.connect() as conn:
        assert rollups.pending(conn)  # the counts were dropped: the ordinary fold takes over
    assert rollups.catch_up(writer, reader) == 2  # d's open and the last one; c's is gone
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_small_batches_close_together_are_held_back_and_one_after_a_pause_is_written(
    engines: tuple[Engine, Engine],
) -> None:
    reader, writer = engines
    ids = build(writer)
    folds = rollups.WriterRollups(hold_from=100, busy_gap=0.5, interval=3600)

    def batch(*events: OpenEvent) -> None:
        with writer.begin() as conn:
            write_opens(conn, list(events), LABELS, folds=folds)

    def pending() -> bool:
        with reader.connect() as conn:
            return rollups.pending(conn)

    batch(opened(ids["a"], 10, HUMAN_TB))
    assert not pending()  # the first batch in a while: written at once
    batch(opened(ids["b"], 20, HUMAN_IOS))
    batch(opened(ids["c"], 30, SCANNER))
    assert pending()  # one open each, but right after the one before: that is load
    time.sleep(0.6)
    batch(opened(ids["d"], 40, HUMAN_TB))
    assert not pending()  # after a pause: written, with what was held
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_held_back_counts_are_written_within_the_interval_batch_or_no_batch(
    engines: tuple[Engine, Engine],
) -> None:
    reader, writer = engines
    ids = build(writer)
    folds = rollups.WriterRollups(hold_from=1, interval=0.0)
    with writer.begin() as conn:
        write_opens(conn, [opened(ids["a"], 10, HUMAN_TB)], LABELS, folds=folds)
    with reader.connect() as conn:
        assert not rollups.pending(conn)  # the interval is over: written with the batch

    folds = rollups.WriterRollups(hold_from=1, interval=0.2)
    with writer.begin() as conn:
        write_opens(conn, [opened(ids["b"], 20, HUMAN_IOS)], LABELS, folds=folds)
    with writer.connect() as conn:
        folds.catch_up(conn)  # between batches, within the interval: still held
        with reader.connect() as read:
            assert rollups.pending(read)
        time.sleep(0.25)
        folds.catch_up(conn)  # no batch came to write them: the writer's upkeep does
    with reader.connect() as conn:
        assert not rollups.pending(conn)
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_opens_committing_out_of_id_order_are_folded_when_they_appear(engines: tuple[Engine, Engine]) -> None:
    """Two writers: the one that took the lower ids commits after a fold has seen the higher ones."""
    reader, writer = engines
    ids = build(writer)
    slow = writer.connect()
    slow_tx = slow.begin()
    write_opens(slow, [opened(ids["b"], 40, HUMAN_TB), opened(ids["b"], 41, HUMAN_TB)], LABELS)
    with writer.begin() as conn:
        write_opens(conn, [opened(ids["c"], 42, SCANNER)], LABELS)
    assert rollups.catch_up(writer, reader) == 1
    with reader.connect() as conn:
        assert len(list(conn.execute(select(rollup_gaps.c.id)))) == 2
        assert not rollups.pending(conn)  # nothing new is visible yet: reads stay read-only
    slow_tx.commit()
    slow.close()
    with reader.connect() as conn:
        assert rollups.pending(conn)
    assert rollups.catch_up(writer, reader) == 2
    assert_rollups_match(reader)
    with reader.connect() as conn:
        assert list(conn.execute(select(rollup_gaps.c.id))) == []


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_ids_of_rolled_back_batches_are_given_up_after_the_horizon(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    ids = build(writer)
    with writer.connect() as conn:
        tx = conn.begin()
        write_opens(conn, [opened(ids["a"], 1, HUMAN_TB)], LABELS)
        tx.rollback()  # a batch the writer spooled instead: its id is never used
    with writer.begin() as conn:
        write_opens(conn, [opened(ids["a"], 2, HUMAN_TB)], LABELS)
    rollups.catch_up(writer, reader)
    with writer.begin() as conn:
        assert len(list(conn.execute(select(rollup_gaps.c.id)))) == 1
        rollups.fold(conn, now=T0 + 10**9)
        assert list(conn.execute(select(rollup_gaps.c.id))) == []
    assert_rollups_match(reader)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_running_server_folds_new_opens_in_the_background(server: Server, settings: Settings) -> None:
    pixels = make_pixels(settings, 3, campaign="live")
    for _, path in pixels:
        assert httpx.get(server.url + path).status_code == 200
    engine = create_engine(settings.database_url)
    deadline = time.monotonic() + 15
    try:
        while True:  # nobody reads: the server's own background step folds them
            with engine.connect() as conn:
                folded = conn.execute(select(func.coalesce(func.sum(open_slots.c.opens), 0))).scalar_one()
            if folded == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert folded == 3
        assert_rollups_match(engine)
    finally:
        engine.dispose()


def test_a_page_does_not_fail_when_the_store_is_too_busy_to_fold(
    engines: tuple[Engine, Engine], settings: Settings
) -> None:
    reader, writer = engines
    ids = build(writer)
    with writer.begin() as conn:
        write_opens(conn, [opened(ids["a"], 99, HUMAN_TB)], LABELS)
    impatient = create_engine(settings.database_url, writer=True, lock_timeout_ms=100)
    holder = writer.connect()
    held = holder.begin()  # SQLite: the write lock; PostgreSQL: the fold's row lock, below
    holder.execute(update(rollup_state).values(updated_at=rollup_state.c.updated_at))
    try:
        rollups.refresh(impatient, reader)  # waits 100 ms, then answers with what is folded
        with reader.connect() as conn:
            assert rollups.pending(conn)
    finally:
        held.rollback()
        holder.close()
    rollups.refresh(impatient, reader)
    impatient.dispose()
    assert_rollups_match(reader)
