"""The basics every benchmark shares: where things are, the loopback host, errors, logging, ports."""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent  # bench/, above this package
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
# The proxy deadpixel trusts with --mix realistic, so that it believes the load's X-Forwarded-For.
TRUSTED_PROXY = f"{HOST}/32"


class BenchError(Exception):
    """The benchmark could not run (a tool is missing, a server did not start...)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_get(
    port: int, path: str, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """GET over a direct connection (no proxy from the environment); returns status, type and body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        conn.close()


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def child_env() -> dict[str, str]:
    """Our environment without DEADPIXEL_* settings, so that only what the benchmark sets applies."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DEADPIXEL_")}
