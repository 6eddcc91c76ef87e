"""The long version of the PostgreSQL outage test: the database goes away under steady load and comes back.

One run of ``python bench/faults.py``:

1. starts a PostgreSQL cluster of its own (``initdb`` into a temp dir, its own port, run as ``postgres``),
   so stopping it disturbs nothing else, and deadpixel (1 worker, CPU 0) on it;
2. sends pixels at ``--rate`` per second for ``--seconds`` with the open-loop client of
   bench/steady_load.py (CPU 1, sleeping between due times rather than spinning, so the database's
   backends can have most of that core), while the database is stopped ``--down-after`` seconds in and started
   again ``--down-for`` seconds later;
3. reports p50/p99/max of every answer over the whole run and in each phase (before the outage, during
   it, while the spool replays, after), how long after the restart the spool was empty, and checks that
   every request was answered 200 and that rows stored == 200 answers.

The short version of the same test runs in the test suite (tests/test_spool.py).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.common import free_port, log
from harness.mix import build_requests
from harness.options import parse_args
from harness.processes import Processes, wait_until_ready
from harness.servers import start_deadpixel
from harness.stores import create_pixels, deadpixel_store

P99_DOWN_MS = 50.0
REPLAY_SECONDS = 5.0


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found or shutil.which("runuser") is None:
            raise SystemExit("needs Debian's PostgreSQL server binaries and runuser")
        self.bin = found[-1].parent
        self.root, self.port = root, port
        shutil.chown(root, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{args[0]} failed: {done.stderr.strip()[:300]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"),
                  "-w", "-o", options, "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")


def spool_empty(data_dir: Path) -> bool:
    return not any((data_dir / "spool").glob("*/*.batch"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="Requests per second (2,000).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the load (60).")
    parser.add_argument("--down-after", type=float, default=15.0)
    parser.add_argument("--down-for", type=float, default=30.0)
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="deadpixel-faults-"))
    cluster = Cluster(root, free_port())
    cluster.start()
    opts = parse_args(["--database-url", cluster.url, "--wait-idle", "0"])
    try:
        with deadpixel_store(opts, root) as store, Processes() as procs:
            paths = create_pixels(store.template_dir, store.url, opts.messages)
            paths_file = root / "requests.txt"
            paths_file.write_text("".join(r.line() + "\n" for r in build_requests(paths, opts)))
            server = start_deadpixel(procs, opts, root, store)
            wait_until_ready(server.process, server.port, server.label, server.log_file)
            assert server.data_dir is not None
            replayed_after: list[float] = []
            moments: dict[str, float] = {}  # time.perf_counter(), the clock of the client's due times

            def outage() -> None:
                time.sleep(args.down_after)
                log(f"stopping PostgreSQL for {args.down_for:g} s")
                moments["down"] = time.perf_counter()
                cluster.stop()
                time.sleep(args.down_for)
                cluster.start()
                back = time.monotonic()
                moments["back"] = time.perf_counter()
                log("PostgreSQL is back")
                while not spool_empty(server.data_dir) and time.monotonic() - back < 60:  # type: ignore[arg-type]
                    time.sleep(0.05)
                replayed_after.append(time.monotonic() - back)
                moments["replayed"] = time.perf_counter()

            thread = threading.Thread(target=outage)
            thread.start()
            load = subprocess.run(
                ["taskset", "-c", str(opts.load_cpu), sys.executable, str(Path(__file__).with_name(
                    "steady_load.py")), "--port", str(server.port), "--paths", str(paths_file),
                 "--rate", str(args.rate), "--seconds", str(args.seconds), "--connections", "64",
                 "--latencies", str(root / "latencies.txt"), "--no-spin"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            thread.join()
            figures = json.loads(load.stdout)
            phases = phase_latencies(root / "latencies.txt", moments)
            procs.stop(server.process, signal.SIGTERM)
            stored = server.stored_opens()
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    errors = figures["other_status"] + figures["unanswered"] + figures["lost_connections"]
    checks = [
        ("p99 over the whole run", f"{figures['p99_ms']:.1f} ms", f"< {P99_DOWN_MS:g} ms",
         figures["p99_ms"] < P99_DOWN_MS),
        ("spool empty after the restart", f"{replayed_after[0]:.2f} s", f"< {REPLAY_SECONDS:g} s",
         replayed_after[0] < REPLAY_SECONDS),
        ("errors (non-200, unanswered, lost)", str(errors), "0", errors == 0),
        ("stored == answered", f"{stored:,} / {figures['ok']:,}", "equal", stored == figures["ok"]),
    ]  # fmt: skip
    p50, p99, worst = figures["p50_ms"], figures["p99_ms"], figures["max_ms"]
    print(f"\nPostgreSQL down {args.down_for:g} s of {args.seconds:g} s at {args.rate:,.0f} requests/s: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms")  # fmt: skip
    back = args.down_after + args.down_for
    print(f"  PostgreSQL stopped at {args.down_after:g} s and started at {back:g} s; the slowest seconds:")
    for worst_second in figures["slowest_seconds"]:
        second, answers = worst_second["second"], worst_second["answers"]
        print(f"    second {second:>4}: {answers:>6,} answers, p99 {worst_second['p99_ms']:8.1f} ms, "
              f"max {worst_second['max_ms']:8.1f} ms")  # fmt: skip
    print("  by phase (when each request was due):")
    for phase, latencies in phases.items():
        if latencies:
            print(f"    {phase:<28} {len(latencies):>7,} answers, p99 {percentile(latencies, 99):8.1f} ms, "
                  f"max {latencies[-1]:8.1f} ms")  # fmt: skip
    for name, value, target, ok in checks:
        print(f"  {name:<36} {value:>20}   target {target:<8} {'PASS' if ok else 'FAIL'}")
    return 0 if all(ok for *_, ok in checks) else 1


def phase_latencies(path: Path, moments: dict[str, float]) -> dict[str, list[float]]:
    """Each answer's latency (ms, sorted) by the phase it was due in: the whole-run p99 can hide a phase."""
    phases: dict[str, list[float]] = {
        "before the outage": [], "PostgreSQL down": [], "replaying the spool": [], "after the replay": [],
    }  # fmt: skip
    bounds = [moments.get("down", math.inf), moments.get("back", math.inf), moments.get("replayed", math.inf)]
    names = list(phases)
    for line in path.read_text().splitlines():
        due, latency = (float(value) for value in line.split())
        phases[names[bisect.bisect_right(bounds, due)]].append(latency)
    for latencies in phases.values():
        latencies.sort()
    return phases


def percentile(sorted_values: list[float], pct: float) -> float:
    return sorted_values[max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)]


if __name__ == "__main__":
    sys.exit(main())
