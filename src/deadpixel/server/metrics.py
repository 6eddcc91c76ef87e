"""Counters each server process publishes, and the sum over all live processes.

Every worker is its own process with its own counters, so each writes a small snapshot file to the data dir
once a second (atomic rename, no locks, nothing on the hot path), and readers add up the files of processes
that are still alive. ``deadpixel metrics`` prints the sum; with ``DEADPIXEL_METRICS_PORT`` set,
``deadpixel serve`` also answers Prometheus on that port: a listener of its own, on loopback by default,
apart from the public one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from deadpixel.track.spool import events_waiting

Snapshot = dict[str, float]
# Gauges read from the shared store at scrape time (the webhook backlog): one figure for all processes, so
# they are read once per scrape instead of being published, and summed, by every process.
StoreGauges = Callable[[], Snapshot]


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
            # In a thread: a rename waits for the filesystem's journal, which a checkpoint's fsync can hold
            # for a tenth of a second, and the event loop answering pixels must not wait with it.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.write)
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


def node_totals(data_dir: Path, store_gauges: StoreGauges | None = None) -> tuple[Snapshot, int]:
    """The running processes' counters summed, plus what waits in the node's spool and the store's gauges."""
    totals, processes = read_metrics(metrics_dir(data_dir))
    waiting = events_waiting(data_dir)
    if processes or waiting:
        totals["spool_events"] = waiting
    for name, value in (store_gauges() if store_gauges else {}).items():
        if processes or value:
            totals[name] = value
    return totals, processes


_HELP = {
    "pixel_requests_total": "Pixel requests answered.",
    "invalid_tokens_total": "Pixel requests with a forged, garbled or unknown token (not recorded).",
    "opens_recorded_total": "Opens stored as events.",
    "opens_capped_total": "Opens over DEADPIXEL_OPEN_CAP: answered and counted on the message, not stored.",
    "opens_dropped_total": "Opens the database refused as data (each is logged).",
    "opens_spooled_total": "Opens put in the local spool while the database did not answer.",
    "opens_replayed_total": "Spooled opens stored once the database answered again.",
    "batches_total": "Transactions committed by the writers.",
    "commit_seconds_total": "Time spent committing batches.",
    "commit_failures_total": "Commits that failed and were retried or spooled.",
    "queue_depth": "Events handed to the writers and not yet committed.",
    "events_held": "Answered events held in memory: neither the database nor the spool could take them.",
    "events_lost_total": "Answered events kept nowhere: the disk full and the memory hold full too.",
    "spool_events": "Events waiting in the spool for the database.",
    "webhook_deliveries_pending": "Webhook deliveries waiting in the outbox (due now or retrying later).",
    "webhook_deliveries_failed": "Webhook deliveries given up after their last attempt (`webhook retry`).",
    "webhook_deliveries_total": "Webhook deliveries the receiver accepted.",
    "webhook_retries_total": "Webhook delivery attempts that failed and will be tried again.",
    "webhook_failures_total": "Webhook deliveries that failed their last attempt.",
}


def prometheus_text(totals: Snapshot, processes: int) -> str:
    """The Prometheus text format: counters end in ``_total``, the rest are gauges."""
    lines = [
        "# HELP deadpixel_processes Server processes publishing metrics.",
        "# TYPE deadpixel_processes gauge",
        f"deadpixel_processes {processes}",
    ]
    for name in sorted(totals):
        metric = f"deadpixel_{name}"
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# HELP {metric} {_HELP.get(name, name.replace('_', ' ').capitalize() + '.')}")
        lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric} {totals[name]:g}")
    return "\n".join(lines) + "\n"


def serve_prometheus(
    data_dir: Path, host: str, port: int, store_gauges: StoreGauges | None = None
) -> ThreadingHTTPServer:
    """Answer ``GET /metrics`` from a thread of the serving process; returns the started server."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = prometheus_text(*node_totals(data_dir, store_gauges)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the server's own log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="deadpixel-metrics", daemon=True).start()
    return server
