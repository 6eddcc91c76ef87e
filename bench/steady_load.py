"""Send pixel requests at a fixed rate and record how long each one takes (used by bench/pixel.py).

wrk measures throughput by keeping every connection busy, which says little about the latency a server
offers at a normal load. This client is open-loop: request ``i`` is due at ``start + i / rate`` whatever
happened to the requests before it. Each due request goes out on an idle keep-alive connection; when all
connections are busy it waits for the next free one, and its latency still counts from the moment it was
due, so a stalled server cannot hide its stall by slowing the client down ("coordinated omission").

The scheduler busy-waits for the last millisecond before each due time (the client has a core to itself),
and reports its own lag behind the schedule so a reader can tell the client's delay from the server's.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import uvloop  # comes with deadpixel on Linux

CONNECT_TIMEOUT = 5.0
SPIN_BELOW = 0.001  # seconds: closer to a due time than this, yield to the loop instead of sleeping


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    due_times: list[float] = field(default_factory=list)  # when each answered request was due, in order
    lags: list[float] = field(default_factory=list)
    ok: int = 0
    other_status: int = 0
    queued: int = 0  # requests that found every connection busy and waited for one
    lost_connections: int = 0


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class PixelConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining, like a browser)."""

    def __init__(self, load: SteadyLoad) -> None:
        self._load = load
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.due = 0.0  # when the request in flight was due

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end])
            size = end + 4 + content_length(head)
            if len(self._buffer) < size:
                return
            del self._buffer[:size]
            self._load.answered(self, status=int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self._load.lost(self)


class SteadyLoad:
    def __init__(self, requests: list[bytes], rate: float, total: int, spin: bool = True) -> None:
        self._requests = requests
        self._interval = 1.0 / rate
        self._total = total
        self._spin = spin
        self._sent = 0
        self._answered = 0
        self._idle: deque[PixelConnection] = deque()
        self._waiting: deque[float] = deque()  # due times of requests that found no idle connection
        self._open: set[PixelConnection] = set()
        self._finished = asyncio.Event()
        self.tally = Tally()
        self.started = time.perf_counter()

    async def connect(self, host: str, port: int, connections: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: PixelConnection(self), host, port), CONNECT_TIMEOUT
            )
            self._open.add(conn)
            self._idle.append(conn)

    def _send(self, conn: PixelConnection, due: float) -> None:
        conn.send(self._requests[self._sent % len(self._requests)], due)
        self._sent += 1

    def _dispatch(self, due: float) -> None:
        if self._idle:
            self.tally.lags.append(time.perf_counter() - due)  # the client's own lateness
            self._send(self._idle.popleft(), due)
        else:
            self.tally.queued += 1
            self._waiting.append(due)

    def answered(self, conn: PixelConnection, status: int) -> None:
        self.tally.latencies.append(time.perf_counter() - conn.due)
        self.tally.due_times.append(conn.due - self.started)
        if status == 200:
            self.tally.ok += 1
        else:
            self.tally.other_status += 1
        self._answered += 1
        if self._waiting:
            self._send(conn, self._waiting.popleft())
        else:
            self._idle.append(conn)
        if self._answered == self._total:
            self._finished.set()

    def lost(self, conn: PixelConnection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self.tally.lost_connections += 1
            if not self._open:
                self._finished.set()

    async def run(self, drain_timeout: float) -> None:
        start = self.started = time.perf_counter() + 0.05
        for i in range(self._total):
            due = start + i * self._interval
            await (_wait_until(due) if self._spin else _sleep_until(due))
            self._dispatch(due)
        # Every request has gone out or is queued for a connection: wait for the last answers.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._finished.wait(), drain_timeout)

    def close(self) -> None:
        for conn in list(self._open):
            self._open.discard(conn)
            if conn.transport is not None:
                conn.transport.close()

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def unanswered(self) -> int:
        return self._total - self._answered


async def _wait_until(due: float) -> None:
    remaining = due - time.perf_counter()
    if remaining > SPIN_BELOW:
        await asyncio.sleep(remaining - SPIN_BELOW)
    while time.perf_counter() < due:
        await asyncio.sleep(0)  # let answers in while we wait


async def _sleep_until(due: float) -> None:
    """Without the spin: wake at most once a millisecond and send whatever is due by then. A request goes
    out up to a millisecond late and its latency still counts from its due time."""
    while (remaining := due - time.perf_counter()) > 0:
        await asyncio.sleep(max(remaining, 0.001))


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 when there are none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(
    load: SteadyLoad, rate: float, seconds: float, connections: int, warmup: float = 0.0
) -> dict[str, Any]:
    """Latencies of the requests due after ``warmup``; counts (``ok`` and the rest) of every request."""
    tally = load.tally
    measured = [lat for due, lat in zip(tally.due_times, tally.latencies, strict=True) if due >= warmup]
    latencies = sorted(measured)
    lags = sorted(tally.lags)
    ms = 1000.0
    return {
        "rate": rate,
        "seconds": seconds,
        "connections": connections,
        "sent": load.sent,
        "queued": tally.queued,
        "ok": tally.ok,
        "other_status": tally.other_status,
        "unanswered": load.unanswered,
        "lost_connections": tally.lost_connections,
        "p50_ms": percentile(latencies, 50) * ms,
        "p90_ms": percentile(latencies, 90) * ms,
        "p99_ms": percentile(latencies, 99) * ms,
        "p999_ms": percentile(latencies, 99.9) * ms,
        "max_ms": (latencies[-1] if latencies else 0.0) * ms,
        "lag_p99_ms": percentile(lags, 99) * ms,
        "lag_max_ms": (lags[-1] if lags else 0.0) * ms,
        "measured": len(measured),
        "warmup": warmup,
        "slowest_seconds": slowest_seconds(tally, warmup),
    }


def slowest_seconds(tally: Tally, warmup: float = 0.0, count: int = 5) -> list[dict[str, float]]:
    """The seconds of the run (by when requests were due) with the slowest answers: where a stall was."""
    per_second: dict[int, list[float]] = {}
    for due, latency in zip(tally.due_times, tally.latencies, strict=True):
        if due >= warmup:
            per_second.setdefault(int(due - warmup), []).append(latency)
    worst = sorted(per_second.items(), key=lambda item: max(item[1]), reverse=True)[:count]
    return [
        {"second": second, "answers": len(values), "p99_ms": percentile(sorted(values), 99) * 1000.0,
         "max_ms": max(values) * 1000.0}
        for second, values in sorted(worst)
    ]  # fmt: skip


def format_request(line: str, host_header: str) -> bytes:
    """A line of the paths file is a URL path, or "PATH<tab>CLIENT_IP<tab>USER_AGENT" (--mix realistic)."""
    path, *extra = line.split("\t")
    headers = f"Host: {host_header}\r\n"
    if extra:
        client_ip, user_agent = extra
        headers += f"X-Forwarded-For: {client_ip}\r\nUser-Agent: {user_agent}\r\n"
    return f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode("latin-1")


async def steady_load(args: argparse.Namespace) -> dict[str, Any]:
    host_header = f"{args.host}:{args.port}"
    lines = [line for line in Path(args.paths).read_text().splitlines() if line]
    requests = [format_request(line, host_header) for line in lines]
    total = max(1, round(args.rate * (args.warmup + args.seconds)))
    load = SteadyLoad(requests, args.rate, total, spin=not args.no_spin)
    try:
        await load.connect(args.host, args.port, args.connections)
        await load.run(drain_timeout=args.drain_timeout)
    finally:
        load.close()
    if args.latencies:
        with open(args.latencies, "w") as out:  # CLOCK_MONOTONIC, as time.perf_counter() in any process
            for due, latency in zip(load.tally.due_times, load.tally.latencies, strict=True):
                out.write(f"{load.started + due:.6f} {latency * 1000.0:.3f}\n")
    return summarise(load, args.rate, args.seconds, args.connections, args.warmup)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--paths",
        required=True,
        help="Requests, one a line, used in turn: a URL path, or PATH<tab>CLIENT_IP<tab>USER_AGENT.",
    )
    parser.add_argument("--rate", type=float, required=True, help="Requests per second.")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="Seconds at the same rate before the measured ones (counted in ok, not in the latencies): "
        "the server settles into the steady load from whatever it did before.",
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--no-spin",
        action="store_true",
        help="Sleep between due times instead of spinning through the last millisecond: for runs where "
        "another process (a database) needs the client's core.",
    )
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument(
        "--latencies", help="Write each answer's due time (perf_counter seconds) and latency (ms) here."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The client must not stall on its own: a pass of the cyclic collector over its growing tallies took
    # 10 to 20 ms, and every answer due meanwhile was counted late. Its garbage is freed by reference
    # counting; nothing it makes per request forms a cycle that would outlive the run.
    gc.collect()
    gc.freeze()
    gc.disable()
    print(json.dumps(uvloop.run(steady_load(args))))


if __name__ == "__main__":
    main()
