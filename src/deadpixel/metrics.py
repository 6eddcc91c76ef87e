"""Counters each server process publishes, and the sum over all live processes.

Every worker is its own process with its own counters, so each writes a small snapshot file to the data dir
once a second (atomic rename, no locks, nothing on the hot path), and readers add up the files of processes
that are still alive. ``deadpixel metrics`` prints the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

Snapshot = dict[str, float]


def metrics_dir(data_dir: Path) -> Path:
    return data_dir / "metrics"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MetricsPublisher:
    def __init__(self, directory: Path, collect: Callable[[], Snapshot], interval: float = 1.0) -> None:
        self._path = directory / f"{os.getpid()}.json"
        self._collect = collect
        self._interval = interval

    def write(self) -> None:
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._collect()))
        os.replace(tmp, self._path)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.write()
            await asyncio.sleep(self._interval)

    def remove(self) -> None:
        self._path.unlink(missing_ok=True)


def read_metrics(directory: Path) -> tuple[Snapshot, int]:
    """Sum the snapshots of live processes; return the sum and how many processes contributed."""
    total: Snapshot = {}
    processes = 0
    for path in sorted(directory.glob("*.json")) if directory.exists() else []:
        if not path.stem.isdigit() or not _alive(int(path.stem)):
            path.unlink(missing_ok=True)
            continue
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        processes += 1
        for name, value in snapshot.items():
            if name.endswith("_max"):
                total[name] = max(total.get(name, 0), value)
            else:
                total[name] = total.get(name, 0) + value
    return total, processes
