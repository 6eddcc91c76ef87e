"""deadpixel's own group-commit counters, as its workers publish them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WriterStats:
    """What deadpixel's group-commit writer did during one load phase (from its published counters)."""

    opens: int
    batches: int
    commit_seconds: float

    @property
    def mean_batch(self) -> float:
        return self.opens / self.batches if self.batches else 0.0

    @property
    def mean_commit_ms(self) -> float:
        return self.commit_seconds / self.batches * 1000 if self.batches else 0.0

    def since(self, earlier: WriterStats) -> WriterStats:
        return WriterStats(
            opens=self.opens - earlier.opens,
            batches=self.batches - earlier.batches,
            commit_seconds=self.commit_seconds - earlier.commit_seconds,
        )


def read_writer_stats(data_dir: Path) -> WriterStats | None:
    """deadpixel's counters as its workers last published them (once a second); None if it publishes none."""
    try:
        from deadpixel.server.metrics import metrics_dir, read_metrics

        time.sleep(1.2)  # let every worker publish what it did up to now
        totals, processes = read_metrics(metrics_dir(data_dir))
        if not processes:
            return None
        return WriterStats(
            opens=int(totals["opens_recorded_total"]),
            batches=int(totals["batches_total"]),
            commit_seconds=float(totals["commit_seconds_total"]),
        )
    except (ImportError, KeyError, OSError, ValueError):
        return None
