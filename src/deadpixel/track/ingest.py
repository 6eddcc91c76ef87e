"""Group commit: many requests, one writer, one transaction per batch, answers only after the commit.

Each request appends its event to the current event-loop tick's list and awaits its own future; once per tick
the list is handed to a single writer thread (one queue operation and at most one thread wake-up per tick, not
per request). The writer takes everything handed over (up to about ``batch_size``), commits it in one
transaction, then releases the waiting requests, which only then send the GIF. Under load batches grow by
themselves, so throughput comes from batching while every answered open is already durable. Stopping the
writer drains the queue first. A writer serves the one event loop of its worker process.

When the database is unreachable, a writer with a spool puts each batch there instead (durable on local
disk) and releases its requests at once. A second thread, the replayer, with a connection of its own, then
tries the database every ``probe_interval`` seconds; once it answers, the replayer replays the spooled
batches oldest first, a chunk at a time with a marker row per batch (``spool_replays``), so a batch is
stored exactly once even if the process dies between its commit and the removal of its file, or two
workers replay it at the same time. New batches keep going to the spool until it is empty, and only then
does the writer commit to the database again: the opens that arrive meanwhile are answered as fast as during
the outage, whatever size the replay's transactions are, and never race the replay for the same messages'
rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
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

from deadpixel.enrich.privacy import scrubbed
from deadpixel.store.replays import forget_old_replays, mark_replayed, remember_replayed
from deadpixel.track.spool import Spool, batch_events, batch_id

log = logging.getLogger(__name__)

_STOP = object()
HOLD_LIMIT = 100_000  # events held in memory when neither the database nor the spool can take them
# Seconds of work per replay transaction. New opens do not wait for it (they go to the spool meanwhile), and
# the longer it is, the less each event costs: a chunk locks and updates each of its messages once, however
# many of their opens it holds. Another node's batches on the same messages wait for those locks, up to
# their commit deadline, after which they are spooled.
REPLAY_BUDGET = 0.3
# While spooling, each batch waits this long for more opens before it goes to the spool. A spool file's
# fsyncs take about a millisecond, so without the wait every file held one or two opens: 30 s without
# PostgreSQL at 2,000 opens/s left 32,000 files, and every probe and replay chunk paid for that many. The
# replay claims and reads each file (about 250 µs a file while the pixel is busy), so 10 ms rather than 5
# took a third off the replay's cost per open. The wait costs each open at most this much, only while the
# spool is in use.
SPOOL_LINGER = 0.01
# Under load a batch waits a moment for company. A batch's fixed costs (the transaction, the commit's fsync,
# the wake-ups) are about 190 µs of the writer's CPU on SQLite, as much as 14 opens' own work, and on one
# core that CPU is the event loop's too. After a batch of LINGER_FROM opens or more (the writer is busy), the
# next waits up to LINGER for LINGER_UNTIL opens, so fixed costs stay near a third of the whole: under full
# load that took 11% off the CPU per answer and added 11% to the answers per second. Under light load batches
# stay small and are committed at once, so waiting never adds to a lone open's latency.
LINGER = 0.001
LINGER_FROM = 16
LINGER_UNTIL = 32
LINGER_NAP = 0.00025  # how often a gathering batch looks for more (see ``_next_tick``)
# The end of a replay holds the writer off (see ``_hand_back``), only when at most this many events are left:
# a few milliseconds' worth.
HAND_BACK_EVENTS = 200
# How long the replayer waits when every batch left is claimed by another worker's replayer.
CLAIMED_PAUSE = 0.05
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
    many events it deliberately did not store (e.g. for erased messages).

    Who writes to the database is always one thread at a time: the writer while the spool is empty, the
    replayer while it is not (``_spooling``, switched under ``_mode`` by the writer when a commit fails and
    by the replayer once it has replayed everything). So ``write`` and the state it keeps (the open cap,
    SQLite's rollups) never run in two threads at once.
    """

    def __init__(
        self,
        engine: Engine,
        write: Callable[[Connection, list[E]], int],
        batch_size: int = 2000,
        name: str = "deadpixel-writer",
        spool: Spool[E] | None = None,
        probe_interval: float = 0.25,
        after_batch: Callable[[Connection], None] | None = None,
        redact: Callable[[E], E] | None = None,
    ) -> None:
        self._engine = engine
        self._redact = redact  # what a log line may show of an event (see _log_failure)
        self._after_batch = after_batch
        self._batch_size = batch_size
        self._write = write
        self._spool = spool
        self._probe_interval = probe_interval
        # Spooling until proven otherwise when an earlier run left batches in the spool.
        self._spooling = bool(spool and spool.has_pending())
        self._mode = threading.Lock()  # held while the writer spools a batch or the replayer hands back
        self._down = False  # the replayer's last try found no database
        self._held: list[E] = []
        self._replay_cost = 1e-4  # seconds per replayed event, learnt while the spool drains
        self._last_hold_log = -10.0
        self._last_down_log = -10.0
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._replayer = threading.Thread(target=self._replay_run, name=f"{name}-replayer", daemon=True)
        self._wake_replayer = threading.Event()
        self._stopping = False
        self._tick: Tick[E] | None = None
        self._handed_over = 0  # written by the event loop only
        self._settled = 0  # written by the writer thread only
        self._last_batch = 0
        self.stats = IngestStats()

    def start(self) -> None:
        self._thread.start()
        if self._spool is not None:
            self._replayer.start()

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

    def record(self, event: E) -> asyncio.Future[None]:
        """Queue ``event`` with this tick's; the future is done once it is committed. A plain function
        rather than a coroutine: the request awaits the future itself, one frame fewer per pixel."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        tick = self._tick
        if tick is None:
            tick = self._tick = ([], [])
            loop.call_soon(self._hand_over)
        tick[0].append(event)
        tick[1].append(future)
        return future

    def _hand_over(self) -> None:
        tick, self._tick = self._tick, None
        if tick is not None:
            self._handed_over += len(tick[0])
            self._queue.put(tick)

    def _run(self) -> None:
        with self._engine.connect() as conn:
            stopping = False
            while not stopping:
                try:
                    item = self._queue.get(timeout=self._wait())
                except queue.Empty:
                    if not self._spooling:
                        self._housekeep(conn)  # idle: upkeep runs anyway, now and then
                    continue
                events, futures, stopping = self._gather(item)
                if events:
                    with self._mode:
                        spooled = self._spooling and self._spool_batch(events)
                    if not spooled:
                        self._commit(conn, events)
                    self._settled += len(events)
                    self._last_batch = len(events)
                    _release(futures)
                    if not self._spooling:
                        self._housekeep(conn)
        self._stop_replayer()
        if self._spool is not None:
            self._spool.close()
        if self._held:
            self.stats.events_lost += len(self._held)
            log.error("stopping with %d answered events neither stored nor spooled: they are lost",
                      len(self._held))  # fmt: skip

    def _gather(self, item: object) -> tuple[list[E], list[asyncio.Future[None]], bool]:
        """The batch that starts with ``item``, a tick's hand-over: its events, their futures, and whether
        the writer was asked to stop."""
        linger_until, enough = self._gathering()
        events: list[E] = []
        futures: list[asyncio.Future[None]] = []
        while item is not None:
            if item is _STOP:
                return events, futures, True
            tick_events, tick_futures = cast(Tick[E], item)
            events.extend(tick_events)
            futures.extend(tick_futures)
            if len(events) >= enough:
                break
            item = self._next_tick(linger_until)
        return events, futures, False

    def _next_tick(self, until: float) -> object | None:
        """The next hand-over, waiting for it until ``until`` at most; None when none came.

        It naps rather than waits on the queue: a wait would wake this thread for every tick's hand-over,
        at a steady 17,000 opens/s once per open, each a switch away from the event loop and back."""
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            wait = until - time.monotonic()
            if wait <= 0:
                return None
            time.sleep(min(wait, LINGER_NAP))

    def _gathering(self) -> tuple[float, int]:
        """Until when a new batch waits for more events, and how many are enough to stop waiting: see
        SPOOL_LINGER and LINGER."""
        if self._spooling:
            return time.monotonic() + SPOOL_LINGER, self._batch_size
        if self._last_batch >= LINGER_FROM:
            return time.monotonic() + LINGER, min(LINGER_UNTIL, self._batch_size)
        return 0.0, self._batch_size

    def _stop_replayer(self) -> None:
        """Let the replayer have a last go at the spool: a clean stop leaves behind nothing it can store."""
        if self._replayer.is_alive():
            self._stopping = True
            self._wake_replayer.set()
            self._replayer.join()

    def _housekeep(self, conn: Connection) -> None:
        """Upkeep the store wants from its writer (see ``WalCheckpointer.catch_up``), once the batch's
        requests are answered, so only the next batch can wait for it."""
        if self._after_batch is None:
            return
        try:
            self._after_batch(conn)
        except Exception:
            log.warning("upkeep after a batch failed; it runs again after the next", exc_info=True)

    def _spool_batch(self, events: list[E]) -> bool:
        """Set a batch aside so its requests can be answered; False only when there is no spool. New
        batches then go to the spool too, until the replayer has stored everything in it.

        When the spool cannot write either (the disk is full), the batch is held in memory, up to
        ``HOLD_LIMIT`` events, until the database or the spool takes it; past that limit events are
        answered and dropped, and counted (``events_lost``): the pixel keeps answering either way.
        """
        if self._spool is None:
            return False
        if not self._spooling:
            self._spooling = True
            self._wake_replayer.set()
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
        """How long to wait for new opens: a second when idle if there is upkeep to run."""
        return IDLE_UPKEEP if self._after_batch is not None else None

    def _replay_run(self) -> None:
        """The replayer: idle while the writer commits, busy from the first spooled batch until the spool is
        empty again, with a probe every ``probe_interval`` while the database does not answer. It holds a
        connection only while busy: most of the time there is nothing to replay."""
        while True:
            if not self._spooling:
                if self._stopping:
                    return
                self._wake_replayer.wait()
                self._wake_replayer.clear()
                continue
            try:
                with self._engine.connect() as conn:
                    while self._spooling:
                        progressed = self._recover(conn)
                        if self._stopping and not progressed:
                            return  # a last try that got nowhere: what is left waits for the next start
                        if self._down or not progressed:  # no database, or batches others are replaying
                            self._pause(self._probe_interval if self._down else CLAIMED_PAUSE)
            except SQLAlchemyError:  # no connection to be had: the database is down
                self._down = True
                if self._stopping:
                    return
                self._pause(self._probe_interval)

    def _pause(self, seconds: float) -> None:
        self._wake_replayer.wait(seconds)
        self._wake_replayer.clear()

    def _recover(self, conn: Connection) -> bool:
        """Store what is held in memory, then replay one chunk of the spool, oldest first; hand the database
        back to the writer once nothing is left. While the database is down this is the probe. False when
        there was nothing this process could store."""
        assert self._spool is not None
        try:
            progressed = self._store_held(conn) if self._held else False
            limit = self._chunk_limit()
            replayed = self._replay_chunk(conn, self._spool.oldest(), limit)
            progressed = progressed or replayed is not None
            # A chunk short of its limit took all there was: what is left came in while it was replayed.
            handed_back = (replayed is None or replayed < limit) and self._hand_back(conn)
        except Exception as exc:  # the replayer must outlive any replay failure
            if isinstance(exc, SQLAlchemyError) and _is_transient(exc):
                self._down = True
                if time.monotonic() - self._last_down_log >= 10:  # one line per 10 s, not per probe
                    self._last_down_log = time.monotonic()
                    log.info("the database still does not answer; %d events wait in the spool, %d in memory",
                             self._spool.events_waiting(), len(self._held))  # fmt: skip
            else:
                log.exception("replaying the spool failed; trying again in %.1f s", self._probe_interval)
                self._down = True
            return False
        self._down = False
        if handed_back:
            log.info("the spool is replayed; every open is in the database")
            return True
        return progressed

    def _hand_back(self, conn: Connection) -> bool:
        """Replay the last few batches with the writer held off, then let it commit new batches again.

        While the writer spools a batch every few milliseconds the spool is never empty for long, so the
        end of a replay holds ``_mode``: no batch of this process can reach the spool meanwhile. Batches
        that other processes spooled after this moment are theirs to replay; older ones (a stopped
        process's) are replayed here, unless another process has them claimed already.
        """
        assert self._spool is not None
        with self._mode:
            if self._held:
                return False
            cutoff = f"{time.time_ns():020d}"  # spool file names start with the time they were written
            older = [path for path in self._spool.pending() if path.name < cutoff]
            if sum(map(batch_events, older)) > HAND_BACK_EVENTS:
                return False  # more than a moment's worth: replayed first without holding the writer
            if older:
                self._replay_chunk(conn, iter(older), HAND_BACK_EVENTS)  # None: other processes have them
            with conn.begin():
                forget_old_replays(conn)
            self._spooling = False
            return True

    def _chunk_limit(self) -> int:
        """Events per replay transaction: as many as fit in ``REPLAY_BUDGET`` at the cost learnt so far."""
        return max(1, int(REPLAY_BUDGET / self._replay_cost))

    def _claim_chunk(
        self, claims: contextlib.ExitStack, paths: Iterator[Path], limit: int
    ) -> list[tuple[Path, list[E]]]:
        """The first of ``paths`` this process may replay now, until they hold ``limit`` events; each stays
        claimed until ``claims`` closes."""
        assert self._spool is not None
        chosen: list[tuple[Path, list[E]]] = []
        size = 0
        for path in paths:
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

    def _replay_chunk(self, conn: Connection, paths: Iterator[Path], limit: int) -> int | None:
        """Replay the first spooled batches of ``paths`` in one transaction, until they hold ``limit``
        events; returns how many they held, None when there were none this process could claim."""
        assert self._spool is not None
        started = time.perf_counter()
        with contextlib.ExitStack() as claims:
            chosen = self._claim_chunk(claims, paths, limit)
            if not chosen:
                return None
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
                return len(replayed)
        # Unlinked once the claims are let go, so the reaper, not this thread, waits for the filesystem.
        self._spool.remove(*(path for path, _ in chosen))
        self._learn_replay_cost(time.perf_counter() - started, len(replayed))
        return len(replayed)

    def _store_held(self, conn: Connection) -> bool:
        """Into the database if it answers, else into the spool if it has room again."""
        assert self._spool is not None
        with self._mode:  # the writer adds to it while the spool fails
            held, self._held = self._held, []
        try:
            with conn.begin():
                self.stats.events_for_erased_messages += self._write(conn, held)
        except SQLAlchemyError:
            with self._mode:
                try:
                    self._spool.append(held)
                    self.stats.events_spooled += len(held)
                except OSError:  # still no room: they stay in memory, oldest first
                    self._held[:0] = held
            raise
        self.stats.events_replayed += len(held)
        return True

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
            self._log_failure(events, "the database refuses spooled batch %s; it is set aside in %s",
                              path.name, self._spool.quarantine)  # fmt: skip
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
                self._log_failure(
                    events, "a batch of %d opens was refused; writing them one by one", len(events)
                )
                self._commit_one_by_one(conn, events)
                return
            except SQLAlchemyError as exc:
                if not _is_transient(exc):
                    self._log_failure(
                        events, "a batch of %d opens failed; writing them one by one", len(events)
                    )
                    self._commit_one_by_one(conn, events)
                    return
                self.stats.commit_failures += 1
                with self._mode:
                    spooled = self._spool_batch(events)
                if spooled:
                    log.warning("committing %d opens failed (%s); spooled them, the pixel goes on answering",
                                len(events), exc.__class__.__name__)  # fmt: skip
                    return
                self._log_failure(
                    events, "committing %d opens failed; retrying in %.2f s", len(events), delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception:  # a bug must not kill the writer: every waiting request would hang
                self._log_failure(events, "a batch of %d opens failed; writing them one by one", len(events))
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
                self._log_failure([event], "dropped an open the database refuses: %r", self._shown(event))
            except Exception:
                self.stats.events_dropped += 1
                self._log_failure(
                    [event], "dropped an open that could not be written: %r", self._shown(event)
                )
            else:
                self._count(1 - erased, 0.0)
                self.stats.events_for_erased_messages += erased

    def _shown(self, event: E) -> E:
        return event if self._redact is None else self._redact(event)

    def _log_failure(self, events: Sequence[E], message: str, *args: object) -> None:
        """``log.exception`` for a failure while handling ``events``: the traceback may quote them (a bug's
        message, a driver's error), so each address in it is reduced as the store keeps it."""
        trace = traceback.format_exc().rstrip()
        if self._redact is not None:
            full = {getattr(event, "ip", None): event for event in events}
            trace = scrubbed(trace, ((ip, getattr(self._shown(e), "ip", None)) for ip, e in full.items()))
        log.error(message + "\n%s", *args, trace)

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
