"""The JSON API while the pixel writer is busy: does every request answer, and how fast.

One run of ``python bench/api.py``:

* starts ``deadpixel serve --workers 2`` on a fresh SQLite store (or ``--database-url``), creates a token and
  50 tracked messages through ``POST /api/v1/messages``;
* keeps 8 threads fetching those pixels for ``--seconds`` (default 10; the open cap is off, so every fetch
  is a row);
* meanwhile, in turn and one at a time: ``POST /api/v1/messages``, ``GET .../campaigns/bench/stats`` and
  ``GET .../opens?limit=100``;
* prints the status codes seen and p50 / p99 per request, and exits 1 if any answer was not 2xx.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import httpx

from harness.common import free_port


def wait_until_healthy(base: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL URL; default a fresh SQLite file")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="deadpixel-bench-api-")
    port = free_port()
    env = {
        **os.environ,
        "DEADPIXEL_DATA_DIR": data,
        "DEADPIXEL_DATABASE_URL": args.database_url or f"sqlite:///{data}/store.db",
        "DEADPIXEL_PORT": str(port),
        "DEADPIXEL_OPEN_CAP": "0",
        "DEADPIXEL_API_RATE": "0",
    }
    deadpixel = [sys.executable, "-m", "deadpixel"]
    secret = subprocess.run(
        [*deadpixel, "token", "create", "bench"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    with open(os.path.join(data, "server.log"), "wb") as log:
        server = subprocess.Popen(
            [*deadpixel, "serve", "--workers", "2"], env=env, stderr=log, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base)
        return run(base, {"authorization": f"Bearer {secret}"}, args.seconds)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def run(base: str, auth: dict[str, str], seconds: float) -> int:
    with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
        body = {"campaign": "bench"}
        pixels = [
            client.post("/api/v1/messages", json={**body, "to": f"r{i}@example.com"}).json()["url"]
            for i in range(50)
        ]
        done = threading.Event()

        def fetch() -> None:
            with httpx.Client(timeout=30) as pixel_client:
                while not done.is_set():
                    for url in pixels:
                        pixel_client.get(url)

        load = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in load:
            thread.start()
        calls: dict[str, Callable[[], httpx.Response]] = {
            "POST /messages": lambda: client.post("/api/v1/messages", json={**body, "to": "x@example.com"}),
            "GET /campaigns/bench/stats": lambda: client.get("/api/v1/campaigns/bench/stats"),
            "GET /opens?limit=100": lambda: client.get("/api/v1/opens?limit=100"),
        }
        seconds_taken: dict[str, list[float]] = {name: [] for name in calls}
        statuses: dict[int, int] = {}
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                for name, call in calls.items():
                    start = time.perf_counter()
                    status = call().status_code
                    seconds_taken[name].append(time.perf_counter() - start)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            done.set()
            for thread in load:
                thread.join()
    print(f"status codes: {dict(sorted(statuses.items()))}")
    for name, taken in seconds_taken.items():
        taken.sort()
        p50, p99 = taken[len(taken) // 2], taken[int(len(taken) * 0.99)]
        print(f"{name:<28} {len(taken):>5} requests  p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms")
    return 0 if all(200 <= status < 300 for status in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
