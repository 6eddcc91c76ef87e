"""Group commit: many requests, one writer, one transaction per batch, answers only after the commit.

Each request appends its event to the current event-loop tick's list and awaits its own future; once per tick
the list is handed to a single writer thread (one queue operation and at most one thread wake-up per tick, not
per request). The writer takes everything handed over (up to about ``batch_size``), commits it in one
transaction, then releases the waiting requests, which only then send the GIF. Under load batches grow by
themselves, so throughput comes from batching while every answered open is already durable. Stopping the
writer drains the queue first. A writer serves the one event loop of its worker process.

When the database is unreachable, a writer with a spool puts each batch there instead (durable on local
disk) and releases its requests at once, then tries the database every ``probe_interval`` seconds. Once it
answers, the spooled batches are replayed oldest first, a chunk at a time with a marker row per batch
(``spool_replays``), so a batch is stored exactly once even if the process dies between its commit and the
removal of its file, or two workers replay it at the same time. While new opens keep coming, each of their
batches carries the next chunk in its own transaction (``_commit_replaying``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from deadpixel.store.replays import forget_old_replays, mark_replayed, remember_replayed
from deadpixel.track.spool import Spool, batch_id

log = logging.getLogger(__name__)

_STOP = object()
HOLD_LIMIT = 100_000  # events held in memory when neither the database nor the spool can take them
# Seconds of replay per batch of new opens: after a long outage the backlog drains in chunks this long, so
# the opens that keep arriving wait at most about this much longer than usual.
REPLAY_BUDGET = 0.015
# While the database is down, each batch waits this long for more opens before it goes to the spool. A spool
# file's fsyncs take about a millisecond, so without the wait every file held one or two opens: 30 s without
# PostgreSQL at 2,000 opens/s left 32,000 files, and every probe and replay chunk paid for that many. The
# wait costs each open at most this much, only during an outage.
SPOOL_LINGER = 0.005
IDLE_UPKEEP = 1.0  # seconds without a batch after which the writer runs its upkeep anyway
E = TypeVar("E")
Tick = tuple[list[E], list["asyncio.Future[None]"]]


@dataclass(slots=True)
class IngestStats:
    events_written: int = 0
    events_dropped: int = 0
    events_for_erased_messages: int = 0
    batches: int = 0
    largest_batch: int = 0
    commit_seconds: float = 0.0
    commit_failures: int = 0
    events_spooled: int = 0
    events_replayed: int = 0
    spool_failures: int = 0
    events_lost: int = 0  # answered, but neither the database, the spool nor memory could keep them


class GroupCommitWriter(Generic[E]):
    """One per kind of event and process. ``write`` stores a batch in the caller's transaction and returns how
    many events it deliberately did not store (e.g. for erased messages)."""

    def __init__(
        self,
        engine: Engine,
        write: Callable[[Connection, list[E]], int],
        batch_size: int = 2000,
        name: str = "deadpixel-writer",
        spool: Spool[E] | None = None,
        probe_interval: float = 0.25,
        after_batch: Callable[[Connection], None] | None = None,
    ) -> None:
        self._engine = engine
        self._after_batch = after_batch
        self._batch_size = batch_size
        self._write = write
        self._spool = spool
        self._probe_interval = probe_interval
        # Down until proven otherwise when an earlier run left batches in the spool.
        # Draining until proven otherwise when an earlier run left batches in the spool.
        self._down = False
        self._draining = bool(spool and spool.has_pending())
        self._last_probe = 0.0
        self._held: list[E] = []
        self._replay_cost = 1e-4  # seconds per replayed event, learnt while the spool drains
        self._last_hold_log = -10.0
        self._last_down_log = -10.0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._tick: Tick[E] | None = None
        self._handed_over = 0  # written by the event loop only
        self._settled = 0  # written by the writer thread only
        self.stats = IngestStats()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Commit everything handed over so far, then end the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    async def aclose(self) -> None:
        """From the event loop: hand over this tick's events too, then drain and stop without blocking it."""
        self._hand_over()
        await asyncio.to_thread(self.stop)

    @property
    def queue_depth(self) -> int:
        """Events handed to the writer and not yet committed."""
        return self._handed_over - self._settled

    async def record(self, event: E) -> None:
        """Return once ``event`` is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        tick = self._tick
        if tick is None:
            tick = self._tick = ([], [])
            loop.call_soon(self._hand_over)
        tick[0].append(event)
        tick[1].append(future)
        await future

    def _hand_over(self) -> None:
        tick, self._tick = self._tick, None
        if tick is not None:
            self._handed_over += len(tick[0])
            self._queue.put(tick)

    def _run(self) -> None:
        with self._engine.connect() as conn:
            stopping = False
            while not stopping:
                events: list[E] = []
                futures: list[asyncio.Future[None]] = []
                try:
                    item = self._queue.get(timeout=self._wait())
                except queue.Empty:
                    if self._down or self._draining:
                        self._recover(conn)
                    elif self._after_batch is not None:
                        self._housekeep(conn)  # idle: upkeep runs anyway, now and then
                    continue
                # While the database is down, a batch gathers for up to SPOOL_LINGER: see the constant.
                linger_until = time.monotonic() + SPOOL_LINGER if self._down else 0.0
                while True:
                    if item is _STOP:
                        stopping = True
                        break
                    tick_events, tick_futures = cast(Tick[E], item)
                    events.extend(tick_events)
                    futures.extend(tick_futures)
                    if len(events) >= self._batch_size:
                        break
                    try:
                        wait = linger_until - time.monotonic()
                        item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                if events:
                    if self._down and time.monotonic() - self._last_probe >= self._probe_interval:
                        self._recover(conn)
                    carried = False  # whether a chunk of the spool went with the batch
                    if not (self._down and self._spool_batch(events)):
                        if self._draining and not self._held:
                            carried = self._commit_replaying(conn, events)
                        else:
                            self._commit(conn, events)
                    self._settled += len(events)
                    _release(futures)
                    if self._after_batch is not None and not self._down:
                        self._housekeep(conn)
                    if self._draining and not carried:
                        self._recover(conn)  # one chunk of the spool between batches of new opens
            while self._down or self._draining:  # a last try, so a clean stop leaves nothing behind
                before = self._spool.events_waiting() if self._spool else 0
                self._recover(conn)
                if self._down or (self._spool and self._spool.events_waiting() >= before):
                    break
            if self._spool is not None:
                self._spool.close()
            if self._held:
                self.stats.events_lost += len(self._held)
                log.error("stopping with %d answered events neither stored nor spooled: they are lost",
                          len(self._held))  # fmt: skip

    def _housekeep(self, conn: Connection) -> None:
        """Upkeep the store wants from its writer (see ``WalCheckpointer.catch_up``), once the batch's
        requests are answered, so only the next batch can wait for it."""
        assert self._after_batch is not None
        try:
            self._after_batch(conn)
        except Exception:
            log.warning("upkeep after a batch failed; it runs again after the next", exc_info=True)

    def _spool_batch(self, events: list[E]) -> bool:
        """Set a batch aside so its requests can be answered; False only when there is no spool.

        When the spool cannot write either (the disk is full), the batch is held in memory, up to
        ``HOLD_LIMIT`` events, until the database or the spool takes it; past that limit events are
        answered and dropped, and counted (``events_lost``): the pixel keeps answering either way.
        """
        if self._spool is None:
            return False
        self._down = True
        try:
            self._spool.append(events)
        except OSError as exc:
            self.stats.spool_failures += 1
            room = max(0, HOLD_LIMIT - len(self._held))
            self._held.extend(events[:room])
            lost = len(events) - min(room, len(events))
            self.stats.events_lost += lost
            if time.monotonic() - self._last_hold_log >= 10 or lost:  # one line per 10 s, not per batch
                self._last_hold_log = time.monotonic()
                log.error("the spool cannot take events (%s); %d held in memory, %d lost in all", exc,
                          len(self._held), self.stats.events_lost)  # fmt: skip
            return True
        self.stats.events_spooled += len(events)
        return True

    @property
    def held(self) -> int:
        """Events answered and waiting in memory because neither the database nor the spool took them."""
        return len(self._held)

    def _wait(self) -> float | None:
        """How long to wait for new opens: a probe's interval while down, not at all while draining, and
        a second when idle if there is upkeep to run."""
        if self._down:
            return self._probe_interval
        if self._draining:
            return 0.0
        return IDLE_UPKEEP if self._after_batch is not None else None

    def _recover(self, conn: Connection) -> None:
        """Store what is held in memory, then replay one chunk of the spool, oldest first.

        While the database is down this is the probe. Once it answers, new batches are committed directly
        again and the spool is replayed a chunk at a time between them, so a long outage's backlog does
        not hold up the requests that arrive while it is being replayed.
        """
        assert self._spool is not None
        self._last_probe = time.monotonic()
        try:
            if self._held:
                self._store_held(conn)
            self._replay_chunk(conn)
        except Exception as exc:  # the writer must outlive any replay failure: requests wait on it
            if isinstance(exc, SQLAlchemyError) and _is_transient(exc):
                self._down, self._draining = True, False
                if time.monotonic() - self._last_down_log >= 10:  # one line per 10 s, not per probe
                    self._last_down_log = time.monotonic()
                    log.info("the database still does not answer; %d events wait in the spool, %d in memory",
                             self._spool.events_waiting(), len(self._held))  # fmt: skip
            else:
                log.exception("replaying the spool failed; trying again in %.1f s", self._probe_interval)
                self._down, self._draining = True, False
            return
        self._down = bool(self._held)
        self._check_drained(conn)

    def _check_drained(self, conn: Connection) -> None:
        assert self._spool is not None
        was_draining, self._draining = self._draining, self._spool.has_pending()
        if was_draining and not self._draining:
            with conn.begin():
                forget_old_replays(conn)
            log.info("the spool is replayed; every open is in the database")

    def _claim_chunk(self, claims: contextlib.ExitStack) -> list[tuple[Path, list[E]]]:
        """The oldest spooled batches this process may replay now, as many as fit in ``REPLAY_BUDGET``;
        each stays claimed until ``claims`` closes."""
        assert self._spool is not None
        limit = max(1, int(REPLAY_BUDGET / self._replay_cost))
        chosen: list[tuple[Path, list[E]]] = []
        size = 0
        for path in self._spool.oldest():
            if size >= limit:
                break
            events = claims.enter_context(self._spool.claim(path))
            if events is not None:
                chosen.append((path, events))
                size += len(events)
        return chosen

    def _learn_replay_cost(self, seconds: float, events: int) -> None:
        if events:
            self._replay_cost = (self._replay_cost + seconds / events) / 2

    def _commit_replaying(self, conn: Connection, events: list[E]) -> bool:
        """Commit a batch of new opens with the oldest chunk of the spool in the same transaction.

        A transaction's fixed cost (its round trips, the lock on the messages, the commit's fsync) is most
        of what a small batch costs on PostgreSQL: replayed in transactions of their own between batches,
        a backlog drained at about a chunk per batch for twice the fixed cost. If anything about the chunk
        fails, the new opens are committed on their own and False says the chunk is still to replay.
        """
        assert self._spool is not None
        started = time.perf_counter()
        chosen: list[tuple[Path, list[E]]] = []
        replayed: list[E] = []
        with contextlib.ExitStack() as claims:
            try:
                chosen = self._claim_chunk(claims)
                replayed = [event for _, replay in chosen for event in replay]
                if chosen:
                    with conn.begin():
                        if remember_replayed(conn, [batch_id(path) for path, _ in chosen]) < len(chosen):
                            raise _SeenBefore
                        erased = self._write(conn, events + replayed)
            except Exception:  # the new opens must not wait on the backlog's trouble
                chosen = []
        if not chosen:  # nothing to replay here, or it failed: the new opens go alone
            self._commit(conn, events)
            return False
        self._spool.remove(*(path for path, _ in chosen))
        seconds = time.perf_counter() - started
        self._learn_replay_cost(seconds, len(events) + len(replayed))
        # Which side an erased message's opens were on is not known: the backlog's are counted first.
        self.stats.events_replayed += len(replayed)
        self.stats.events_for_erased_messages += erased
        self._count(len(events) - max(0, erased - len(replayed)), seconds)
        self._check_drained(conn)
        return True

    def _replay_chunk(self, conn: Connection) -> None:
        """Replay the oldest spooled batches in one transaction, as many as fit in ``REPLAY_BUDGET``."""
        assert self._spool is not None
        started = time.perf_counter()
        with contextlib.ExitStack() as claims:
            chosen = self._claim_chunk(claims)
            if not chosen:
                return
            replayed = [event for _, events in chosen for event in events]
            try:
                with conn.begin():
                    if remember_replayed(conn, [batch_id(path) for path, _ in chosen]) < len(chosen):
                        raise _SeenBefore  # rolls back the markers this chunk did add
                    erased = self._write(conn, replayed)  # the usual case: one write for the whole chunk
                fresh = True
                self.stats.events_for_erased_messages += erased
                self.stats.events_replayed += len(replayed)
            except (DataError, IntegrityError, _SeenBefore):
                fresh = False
            if not fresh:  # a batch stored before, or one the database refuses: one at a time
                for path, _ in chosen:
                    self._replay(conn, path)
                return
        # Unlinked once the claims are let go, so the reaper, not this thread, waits for the filesystem.
        self._spool.remove(*(path for path, _ in chosen))
        self._learn_replay_cost(time.perf_counter() - started, len(replayed))

    def _store_held(self, conn: Connection) -> None:
        """Into the database if it answers, else into the spool if it has room again."""
        assert self._spool is not None
        held = self._held
        try:
            with conn.begin():
                self.stats.events_for_erased_messages += self._write(conn, held)
        except SQLAlchemyError:
            with contextlib.suppress(OSError):  # still no room: they stay in memory
                self._spool.append(held)
                self._held = []
                self.stats.events_spooled += len(held)
            raise
        self._held = []
        self.stats.events_replayed += len(held)

    def _replay(self, conn: Connection, path: Path) -> None:
        assert self._spool is not None
        events = self._spool.load(path)
        try:
            with conn.begin():
                if mark_replayed(conn, batch_id(path)):
                    erased = self._write(conn, events)
                    self.stats.events_replayed += len(events)
                    self.stats.events_for_erased_messages += erased
        except (DataError, IntegrityError):
            log.exception("the database refuses spooled batch %s; it is set aside in %s", path.name,
                          self._spool.quarantine)  # fmt: skip
            self.stats.events_dropped += len(events)
            self._spool.refuse(path)
            return
        self._spool.remove(path)

    def _commit(self, conn: Connection, events: list[E]) -> None:
        delay = 0.05
        while True:
            started = time.perf_counter()
            try:
                with conn.begin():
                    erased = self._write(conn, events)
            except (DataError, IntegrityError):
                log.exception("a batch of %d opens was refused; writing them one by one", len(events))
                self._commit_one_by_one(conn, events)
                return
            except SQLAlchemyError as exc:
                if not _is_transient(exc):
                    log.exception("a batch of %d opens failed; writing them one by one", len(events))
                    self._commit_one_by_one(conn, events)
                    return
                self.stats.commit_failures += 1
                if self._spool_batch(events):
                    log.warning("committing %d opens failed (%s); spooled them, the pixel goes on answering",
                                len(events), exc.__class__.__name__)  # fmt: skip
                    return
                log.exception("committing %d opens failed; retrying in %.2f s", len(events), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:  # a bug must not kill the writer: every waiting request would hang
                log.exception("a batch of %d opens failed; writing them one by one", len(events))
                self._commit_one_by_one(conn, events)
                return
            self._count(len(events) - erased, time.perf_counter() - started)
            self.stats.events_for_erased_messages += erased
            return

    def _commit_one_by_one(self, conn: Connection, events: list[E]) -> None:
        """Isolate the event the database refuses so the rest of its batch is still stored."""
        for event in events:
            try:
                with conn.begin():
                    erased = self._write(conn, [event])
            except (DataError, IntegrityError, SQLAlchemyError) as exc:
                if isinstance(exc, SQLAlchemyError) and _is_transient(exc):
                    self._commit(conn, [event])  # the database went away meanwhile: wait for it
                    continue
                self.stats.events_dropped += 1
                log.exception("dropped an open the database refuses: %r", event)
            except Exception:
                self.stats.events_dropped += 1
                log.exception("dropped an open that could not be written: %r", event)
            else:
                self._count(1 - erased, 0.0)
                self.stats.events_for_erased_messages += erased

    def _count(self, n: int, seconds: float) -> None:
        stats = self.stats
        stats.events_written += n
        stats.batches += 1
        stats.largest_batch = max(stats.largest_batch, n)
        stats.commit_seconds += seconds


class _SeenBefore(Exception):
    """A replay chunk holds a batch already in the store: replay its batches one at a time instead."""


def _is_transient(exc: SQLAlchemyError) -> bool:
    """Connection trouble, a lock timeout or a server restart: worth waiting for, unlike a bad statement."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | TimeoutError)


def _release(futures: list[asyncio.Future[None]]) -> None:
    """Wake the waiting requests: one thread-safe call per event loop per batch, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for future in futures:
        by_loop.setdefault(future.get_loop(), []).append(future)
    for loop, group in by_loop.items():
        # A closed loop raises RuntimeError: its requests are gone, and their events are stored.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, group)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)
