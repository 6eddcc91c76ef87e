"""A local, durable spool for the batches the database cannot take right now.

When the database is unreachable (PostgreSQL restarting, a lock held past the busy timeout), the pixel must
still answer at once and lose nothing it answered. The writer then puts each batch in a file of its own in
the data dir (written, fsynced, renamed into place, directory fsynced) and releases the waiting requests:
their opens are as durable there as in the database. The writer keeps trying the database and, once it
answers, replays the files oldest first (see ``GroupCommitWriter``).

A file holds only what the store would keep of a reader's address (``redact``, from DEADPIXEL_IP_MODE):
the replay derives country and network from that, which for ``truncate`` are those of the full address
(no geo or network list entry is finer than a /24 or a /48, as a rule), and for ``none`` are unknown.

A file's name carries its event count, so the spool's size is known from a directory listing.

A long outage leaves thousands of files, and listing and sorting them costs about a millisecond per
thousand: done for every replay chunk, that made the replay slower the longer the outage had been, until
after 30 s without PostgreSQL at 2,000 opens/s the writer fell behind the new opens for good. So the spool
keeps the names it knows in order in memory and lists the directory again only when they run out or once
a second (``RELIST_SECONDS``), which is how it learns of the files other workers of the node spooled.

Replayed files are unlinked by a thread of their own. Unlinking a file that was fsynced moments ago waits
for the filesystem's journal (a millisecond or more here), and a long outage leaves thousands of files:
done by the writer between batches, that wait alone held new opens up for seconds after the database came
back. Nothing depends on when the unlink lands: a replayed file that outlives a crash is recognised by its
marker in the store (``spool_replays``) and skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

E = TypeVar("E")

SUFFIX = ".batch"
RELIST_SECONDS = 1.0
SNAPSHOT = 1000  # names handed out at a time: far more than one replay chunk takes


class Spool(Generic[E]):
    """Files of one kind of event (opens or clicks), shared by the workers of one data dir."""

    def __init__(
        self, directory: Path, event_type: Callable[..., E], redact: Callable[[E], E] | None = None
    ) -> None:
        self.directory = directory
        self.quarantine = directory / "refused"
        self._event_type = event_type
        # What a file may hold of an event: its address as the store keeps it (DEADPIXEL_IP_MODE).
        self._redact = redact
        self._sequence = itertools.count()
        self._replayed: set[str] = set()  # names handed to the reaper and not unlinked yet
        self._known: deque[str] = deque()  # names not replayed yet, oldest first
        self._names = threading.Lock()  # guards _known: the writer appends while the replayer reads it
        self._listed_at = -RELIST_SECONDS
        self._unlinks: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._reaper: threading.Thread | None = None
        self._lock = threading.Lock()
        # Parents too: mkdir(parents=True) would make them with the umask's mode, and they list its files.
        for path in (*reversed(directory.parents), directory):
            if not path.exists():
                path.mkdir(mode=0o700, exist_ok=True)

    def append(self, events: Sequence[E]) -> Path:
        """Store a batch durably; raises OSError (a full disk, say) when it cannot."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence)}-{len(events)}{SUFFIX}"
        target = self.directory / name
        partial = self.directory / f".{name}.partial"
        if self._redact is not None:
            events = [self._redact(event) for event in events]
        data = json.dumps([list(event) for event in events]).encode()  # type: ignore[call-overload]
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(partial, target)
            _fsync_directory(self.directory)
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        with self._names:
            self._known.append(name)  # the newest: its name starts with the time
        return target

    def pending(self) -> list[Path]:
        """Spooled batches not yet replayed, oldest first: all of them, from a fresh listing."""
        self._relist()
        with self._names:
            return [self.directory / name for name in self._known if name not in self._replayed]

    def oldest(self) -> Iterator[Path]:
        """Spooled batches not yet replayed, oldest first (names start with a zero-padded time), one path at
        a time: after a long outage there are thousands, and a replay chunk takes a few. A file another
        process removed meanwhile may still be named: ``claim`` says no to it."""
        if not self._known or time.monotonic() - self._listed_at >= RELIST_SECONDS:
            self._relist()
        with self._names:
            known, replayed = self._known, self._replayed
            while known and known[0] in replayed:
                known.popleft()
            snapshot = [name for name in itertools.islice(known, SNAPSHOT) if name not in replayed]
        return (self.directory / name for name in snapshot)

    def _relist(self) -> None:
        with self._names:  # a batch appended meanwhile must not fall out of the new list
            replayed = self._replayed
            names = sorted(
                name for name in os.listdir(self.directory) if name.endswith(SUFFIX) and name not in replayed
            )
            self._known = deque(names)
            self._listed_at = time.monotonic()

    def has_pending(self) -> bool:
        return next(self.oldest(), None) is not None

    def events_waiting(self) -> int:
        self._relist()
        with self._names:
            replayed = self._replayed
            return sum(_count(name) for name in self._known if name not in replayed)

    def load(self, path: Path) -> list[E]:
        return self._decode(path.read_bytes())

    def _decode(self, data: bytes) -> list[E]:
        rows: list[list[Any]] = json.loads(data)
        return [self._event_type(*row) for row in rows]

    def remove(self, *paths: Path) -> None:
        """Forget replayed batches at once; their files go in the background (see the module's notes)."""
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="deadpixel-spool-reaper", daemon=True)
                self._reaper.start()
        for path in paths:
            self._replayed.add(path.name)
            self._unlinks.put(path)

    def close(self) -> None:
        """Wait until every replayed file is unlinked."""
        with self._lock:
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            self._unlinks.put(None)
            reaper.join()

    def _reap(self) -> None:
        while (path := self._unlinks.get()) is not None:
            path.unlink(missing_ok=True)
            self._replayed.discard(path.name)

    def refuse(self, path: Path) -> None:
        """Set aside a batch the database refuses outright, for a person to look at; it is not retried."""
        self.quarantine.mkdir(mode=0o700, exist_ok=True)
        path.rename(self.quarantine / path.name)

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[E] | None]:
        """The batch's events while this process holds ``path``; None while another worker is replaying it,
        or once it is gone. The events are read through the descriptor that holds the lock: a replay chunk
        claims several files, and a second open of each cost as much again."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if not path.exists():  # replayed and removed, or set aside, by another worker meanwhile
                yield None
                return
            yield self._decode(_read_all(fd))
        finally:
            os.close(fd)


def node_spool_dir(data_dir: Path) -> Path:
    """Where a node's batches wait while the database is unreachable: local, like its data dir."""
    return data_dir / "spool"


def events_waiting(data_dir: Path) -> int:
    """Opens and clicks in a node's spool, whichever process put them there (no directory is created)."""
    root = node_spool_dir(data_dir)
    return sum(_count(path.name) for path in root.glob("*/*" + SUFFIX)) if root.exists() else 0


def batch_id(path: Path) -> str:
    """The name a replayed batch is remembered by in the store (``spool_replays``)."""
    return path.name.removesuffix(SUFFIX)


def batch_events(path: Path) -> int:
    """How many events a spooled batch holds, from its name."""
    return _count(path.name)


def _count(name: str) -> int:
    try:
        return int(name.removesuffix(SUFFIX).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
