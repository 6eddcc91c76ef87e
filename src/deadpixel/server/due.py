"""Due work: the server's background jobs that run when something stored says they are due.

One thread per worker process calls each registered ``DueWork`` in turn; each takes what is due, under a
lease in the store so that several processes and servers never do the same piece twice, and returns whether
it did anything. When none did, the thread waits ``poll`` seconds. Campaign sends are the first kind
(``deadpixel.send.job_runner.CampaignJobs``); a later kind (a follow-up, an A/B test's winner) is one more
object with ``run_due`` and ``stop`` in the list ``server/app.py`` builds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks when nothing was due: a scheduled send starts within about this


class DueWork(Protocol):
    name: str

    def run_due(self) -> bool:
        """Do one due piece of work, if any; True if there was one (the thread then looks again at once)."""
        ...

    def stop(self) -> None:
        """Called from another thread when the server stops: end the piece in hand soon, leaving it due."""
        ...


class DueWorkThread:
    def __init__(self, works: Sequence[DueWork], poll: float = POLL) -> None:
        self.works = tuple(works)
        self.poll = poll
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deadpixel-due-work", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        for work in self.works:
            work.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            did = False
            for work in self.works:
                if self._stopping.is_set():
                    return
                try:
                    did = work.run_due() or did
                except Exception:  # the store away, a bug: logged, and tried again after the pause
                    log.exception("due work %r failed; trying again shortly", work.name)
            if not did:
                self._stopping.wait(self.poll)
