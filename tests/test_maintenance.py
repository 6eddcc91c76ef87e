"""Rewriting history on real stores: reclassify, retention, forgetting a person."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select

from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier, enricher_from_settings
from deadpixel.events import OpenEvent
from deadpixel.reclassify import reclassify
from deadpixel.reports import analytics
from deadpixel.store import maintenance
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import messages, opens
from deadpixel.store.writes import write_opens

from .conftest import Server
from .helpers import deadpixel

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1"
RAW = OpenClassifier(None, "full")


def seeded(settings: Settings) -> tuple[Engine, dict[str, str]]:
    """Three messages with opens recorded while enrichment was off (as after an upgrade from 0001)."""
    engine = create_engine(settings.database_url)
    now = time.time()
    with engine.begin() as conn:
        ids = {name: create_message(conn, recipient=f"{name}@example.com", campaign="c") for name in "abc"}
        write_opens(
            conn,
            [
                OpenEvent(ids["a"], now - 40 * 86400, "81.2.69.142", THUNDERBIRD, "GET"),
                OpenEvent(ids["a"], now - 60, "81.2.69.142", THUNDERBIRD, "GET"),
                OpenEvent(ids["b"], now - 50, "17.58.0.1", "Mozilla/5.0", "GET"),
                OpenEvent(ids["c"], now - 10, "81.2.69.142", THUNDERBIRD, "HEAD"),
            ],
            RAW,
        )
    return engine, ids


def test_reclassify_fills_verdicts_and_rebuilds_counters(settings: Settings) -> None:
    engine, ids = seeded(settings)
    with engine.connect() as conn:
        before = analytics.report(conn, "c")
    assert (before["unique_opens"], before["human_opens"], before["machine_opens"]) == (3, 0, 0)
    with engine.begin() as conn:
        assert reclassify(conn, OpenClassifier(enricher_from_settings(settings), "full")) == 4
    with engine.connect() as conn:
        after = analytics.report(conn, "c")
        kinds = dict(
            conn.execute(select(opens.c.message_id, opens.c.kind).where(opens.c.method == "HEAD")).all()
        )
    assert (after["unique_opens"], after["human_opens"], after["machine_opens"]) == (3, 1, 2)
    assert after["total_opens"] == 4
    assert kinds == {ids["c"]: "scanner"}
    engine.dispose()


def test_retention_drops_raw_detail_but_keeps_counts_and_breakdowns(settings: Settings) -> None:
    engine, _ = seeded(settings)
    with engine.begin() as conn:
        reclassify(conn, OpenClassifier(enricher_from_settings(settings), "full"))
    with engine.connect() as conn:
        before = analytics.report(conn, "c")
    with engine.begin() as conn:
        assert maintenance.purge_raw_detail(conn, retention_days=30) == 1
        assert maintenance.purge_raw_detail(conn, retention_days=30) == 0  # idempotent
    with engine.connect() as conn:
        old = conn.execute(select(opens).order_by(opens.c.at).limit(1)).one()
        assert (old.ip, old.user_agent, old.city) == (None, None, None)
        assert (old.client, old.country, old.kind) == ("Thunderbird", "GB", "human")
        assert analytics.report(conn, "c") == before
    # Reclassifying later keeps what can no longer be judged.
    with engine.begin() as conn:
        reclassify(conn, OpenClassifier(enricher_from_settings(settings), "full"))
    with engine.connect() as conn:
        assert analytics.report(conn, "c") == before
    engine.dispose()


def test_forget_erases_a_recipients_messages_and_opens_only(settings: Settings) -> None:
    engine, ids = seeded(settings)
    with engine.begin() as conn:
        assert maintenance.forget_recipient(conn, "A@Example.com") == (1, 2)
    with engine.connect() as conn:
        assert set(conn.execute(select(messages.c.id)).scalars()) == {ids["b"], ids["c"]}
        assert ids["a"] not in set(conn.execute(select(opens.c.message_id)).scalars())
        assert conn.execute(select(opens.c.id)).all().__len__() == 2
    engine.dispose()


def run(*args: str, env: dict[str, str] | None = None) -> str:
    return deadpixel(*args, env=env, check=True).stdout


def test_maintenance_commands(settings: Settings) -> None:
    engine, _ = seeded(settings)
    engine.dispose()
    assert "Reclassified 4 opens" in run("reclassify")
    assert "is not set" in run("purge")
    assert "raw detail of 1 open(s) older than 30 days" in run(
        "purge", env={"DEADPIXEL_RETENTION_DAYS": "30"}
    )
    assert "Erased 1 message(s) and 1 open(s) of b@example.com" in run("forget", "b@example.com", "--yes")


def test_the_server_applies_retention_on_its_own(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    engine, _ = seeded(settings)
    server_factory(env={**env, "DEADPIXEL_RETENTION_DAYS": "30"}).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            kept = conn.execute(select(opens.c.user_agent).where(opens.c.user_agent.is_not(None))).all()
        if len(kept) == 3:
            break
        time.sleep(0.2)
    assert len(kept) == 3
    engine.dispose()
