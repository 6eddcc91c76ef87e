"""Soak: deadpixel at half its capacity for ten minutes, watching memory, latency, errors and the count.

One run of ``python bench/soak.py``:

1. **Capacity.** wrk (CPU 1) against a deadpixel on CPU 0 for ``--capacity-seconds``, with exactly counted
   answers (bench/wrk_pixels.lua), on a store of its own that the soak does not use.
2. **Soak.** A fresh deadpixel on CPU 0, and the open-loop client of bench/steady_load.py (CPU 1) at half
   that capacity (or ``--rate``) for ``--minutes``, in windows of ``--window`` seconds. After each window:
   the server's RSS (main process and workers), the window's p50/p99/max latency and any non-200 answer,
   unanswered request or lost connection, and the server's CPU: its share of its core and per answer. An
   open-loop load of small, spread-out batches costs more per answer than the capacity run's 64 busy
   connections, so "half capacity" keeps the core more than half busy; past 80% the soak says so, and the
   CPU per answer in each window tells a server that was working from one that was waiting (a stalled
   disk or machine). See docs/design.md, "Half the capacity is not half the work".
3. **Checks.** The first window is a warm-up (caches fill, the WAL grows to its working size); after it,
   RSS at the end within 10% of RSS after the first measured window, p99 under 10 ms in every window, zero
   errors in any window, and, after a SIGTERM that drains the queue, rows stored == 200 answers counted
   (the open cap is off, as in bench/pixel.py, so every answer is stored).

The request mix is the same as bench/pixel.py's (``--mix realistic`` for client addresses and user agents).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.common import log
from harness.cpu import all_processes, tree_cpu
from harness.load import measure_throughput
from harness.mix import build_requests
from harness.options import Options, parse_args
from harness.processes import Processes, require_tools, wait_until_ready
from harness.servers import start_deadpixel
from harness.stores import Store, create_pixels, deadpixel_store

WINDOW_P99_MS = 10.0
RSS_GROWTH = 0.10
BUSY_CORE = 0.8  # past this share of its core at "half capacity", the soak points it out


def server_cpu(root: int) -> float:
    """CPU seconds of the server and its worker processes so far."""
    return tree_cpu(root, all_processes())


@dataclass
class Window:
    minute: float
    rss_mib: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    ok: int
    errors: int
    server_core: float  # share of its core the server used over the window
    cpu_us: float  # server CPU per answer


def tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and its descendants (uvicorn's worker processes), from /proc."""
    processes = all_processes()
    family, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p.pid for p in processes.values() if p.ppid == parent and p.pid not in family]
        family.update(children)
        frontier.extend(children)
    total = 0
    for pid in family:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def measure_capacity(procs: Processes, opts: Options, workdir: Path, store: Store, paths_file: Path) -> float:
    server = start_deadpixel(procs, opts, workdir, store, enrichment=True, run_number=1)
    wait_until_ready(server.process, server.port, server.label, server.log_file)
    throughput = measure_throughput(procs, server, opts, paths_file, workdir)
    procs.stop(server.process, signal.SIGTERM)
    log(f"capacity: {throughput.rps:,.0f} answers/s ({throughput.cpu_us_per_request:.1f} µs CPU each)")
    return throughput.rps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0, help="Seconds per measuring window (30).")
    parser.add_argument("--rate", type=float, help="Requests/s; default half the measured capacity.")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--mix", choices=("plain", "realistic"), default="plain")
    parser.add_argument("--json", action="store_true", help="Print the windows and checks as JSON too.")
    args = parser.parse_args(argv)
    opts = parse_args(["--mix", args.mix, "--seconds", str(args.capacity_seconds), "--wait-idle", "0"])

    require_tools()
    os.sched_setaffinity(0, {opts.load_cpu})  # this script must not take time from the server's core
    with tempfile.TemporaryDirectory(prefix="deadpixel-soak-") as tmp:
        workdir = Path(tmp)
        with deadpixel_store(opts, workdir) as store, Processes() as procs:
            paths = create_pixels(store.template_dir, store.url, opts.messages, args.mix == "realistic")
            requests = build_requests(paths, opts)
            paths_file = workdir / "requests.txt"
            paths_file.write_text("".join(r.line() + "\n" for r in requests))
            rate = args.rate or measure_capacity(procs, opts, workdir, store, paths_file) / 2
            log(f"soak at {rate:,.0f} requests/s for {args.minutes:g} minutes")

            server = start_deadpixel(procs, opts, workdir, store, enrichment=True, run_number=2)
            wait_until_ready(server.process, server.port, server.label, server.log_file)
            windows: list[Window] = []
            answered = 0
            started = time.monotonic()
            # One window of warm-up first (caches fill, the WAL grows to its working size): its answers
            # count for stored == answered, its latency and memory do not.
            while time.monotonic() - started < args.minutes * 60 + args.window:
                cpu_before, wall_before = server_cpu(server.process.pid), time.monotonic()
                out = subprocess.run(
                    ["taskset", "-c", str(opts.load_cpu), sys.executable, str(Path(__file__).with_name(
                        "steady_load.py")), "--port", str(server.port), "--paths", str(paths_file),
                     "--rate", str(rate), "--seconds", str(args.window), "--connections", "64"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                cpu = server_cpu(server.process.pid) - cpu_before
                wall = time.monotonic() - wall_before
                figures = json.loads(out.stdout)
                answered += figures["ok"]
                errors = figures["other_status"] + figures["unanswered"] + figures["lost_connections"]
                window = Window(
                    (time.monotonic() - started) / 60, tree_rss_kib(server.process.pid) / 1024,
                    figures["p50_ms"], figures["p99_ms"], figures["max_ms"], figures["ok"], errors,
                    cpu / wall, cpu / max(1, figures["ok"]) * 1e6,
                )  # fmt: skip
                windows.append(window)
                log(
                    f"  {window.minute:5.1f} min  RSS {window.rss_mib:6.1f} MiB  p50 {window.p50_ms:5.2f} ms"
                    f"  p99 {window.p99_ms:6.2f} ms  max {window.max_ms:7.2f} ms  ok {window.ok:,}"
                    f"  errors {window.errors}  server core {window.server_core:4.0%}"
                    f" ({window.cpu_us:5.1f} µs CPU each)"
                )
            procs.stop(server.process, signal.SIGTERM)
            stored = server.stored_opens()

    errors = sum(w.errors for w in windows)
    windows = windows[1:]
    growth = windows[-1].rss_mib / windows[0].rss_mib - 1
    worst_p99 = max(w.p99_ms for w in windows)
    checks = [
        ("RSS growth after the first window", f"{growth:+.1%}", f"< {RSS_GROWTH:.0%}", growth < RSS_GROWTH),
        ("worst window p99", f"{worst_p99:.2f} ms", f"< {WINDOW_P99_MS:g} ms", worst_p99 < WINDOW_P99_MS),
        ("errors", str(errors), "0", errors == 0),
        ("stored == answered", f"{stored:,} / {answered:,}", "equal", stored == answered),
    ]
    print(f"\ndeadpixel soak: {rate:,.0f} requests/s, {args.minutes:g} min, {args.mix} mix, 1 worker, SQLite")
    for name, value, target, ok in checks:
        print(f"  {name:<34} {value:>22}   target {target:<8} {'PASS' if ok else 'FAIL'}")
    busiest = max(w.server_core for w in windows)
    print(f"  server's core busy (per window)    {min(w.server_core for w in windows):.0%} to {busiest:.0%}")
    if busiest > BUSY_CORE:
        print(
            f"warning: at this rate the server used up to {busiest:.0%} of its core: the open-loop load pays"
            " per-batch and per-wake-up costs that the capacity run's busy connections share, so half the"
            " capacity was not half the work"
        )
    if args.json:
        print(json.dumps({"rate": rate, "windows": [w.__dict__ for w in windows],
                          "checks": {name: ok for name, _, _, ok in checks}}))  # fmt: skip
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
