"""How many pixels a second deadpixel answers, next to the most and the least a pixel server does.

One run of ``python bench/pixel.py`` measures, on loopback:

* **Throughput.** Answers with status 200 per second for deadpixel's complete pixel path: the token is
  checked, the open is committed (SQLite in WAL mode with ``synchronous=FULL``, or PostgreSQL) and only then
  the GIF goes out. wrk keeps 64 keep-alive connections busy with 1,000 genuine pixel URLs in turn.
* **Two baselines**, under the same load and the same URLs:
  - nginx's ``empty_gif`` with its access log on: the ceiling. A C server answering from memory and
    appending a log line, with no token check and nothing durable; deadpixel aims for a quarter of it.
  - a naive tracker (bench/naive_tracker.py: Flask's threaded server, SQLite with default settings, one
    INSERT and one commit per open): the floor, durable like deadpixel but one transaction per open.
* **Exactness.** After its run each server is stopped (deadpixel with SIGTERM, which drains its queue) and
  the rows in its ``opens`` table must equal the 200 answers counted: nothing lost, nothing recorded that
  was not answered. The count of 200s is exact because no request is in flight when wrk stops (see
  bench/wrk_pixels.lua); for nginx the access log is checked the same way, which validates the counting.
* **Latency.** p50/p99/max of deadpixel at a steady half of its measured throughput, from an open-loop
  client (bench/steady_load.py) that counts each request from the moment it was due.
* **Cost.** Server CPU time per request, read from /proc (utime + stime of the server process and all its
  descendants: nginx's worker, uvicorn's worker processes) at the instants the measuring window opens and
  closes.
* **Group commit.** deadpixel's own counters (batches, opens per batch, time per commit) under full load
  and at half load, which show whether the writer is what limits it.
* **A realistic mix** (``--mix realistic``). By default every request is a bare GET of a pixel URL. With the
  realistic mix each one also carries ``X-Forwarded-For`` with one of 5,000 public IPv4 addresses (some in
  Apple's, Google's and Microsoft EOP's networks) and a ``User-Agent`` from the mail user-agent data file,
  and deadpixel trusts 127.0.0.1 as its proxy, so enrichment sees thousands of clients and every verdict
  path. nginx and the naive tracker get the same request bytes.
* **The cost of enrichment** (``--compare-enrichment``). deadpixel runs several times in one benchmark,
  alternately with ``DEADPIXEL_ENRICHMENT=false`` and with enrichment on (off, on, then on, off, ...), and
  the report compares the two ratios to nginx: enrichment must not cost more than 10% of the pixel's
  throughput. The opens stored by each run, split by verdict, show that enrichment ran (and only when on).

Every server runs pinned to one core (CPU 0) and every load generator to the other (CPU 1), so a server
gets exactly one core and never shares it with the load. Each measurement waits for an idle machine first,
and the report shows how busy both cores were and how much CPU other processes took meanwhile, so a run
disturbed by the generator or by anything else is visible as such. The script starts nginx, wrk and the
servers itself and stops every one of them however the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import ipaddress
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from deadpixel.config import load_settings
from deadpixel.keys import load_or_create_keys
from deadpixel.server import prepare
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.tokens import TokenSigner
from deadpixel.track.pixel import GIF

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk_pixels.lua"
NAIVE_TRACKER = BENCH_DIR / "naive_tracker.py"
STEADY_LOAD = BENCH_DIR / "steady_load.py"

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PG_APPLICATION_NAME = "deadpixel-bench"
CAMPAIGN = "bench"

NGINX_RATIO_TARGET = 0.25
NGINX_RATIO_STRETCH = 0.30
NAIVE_RATIO_TARGET = 30.0
P99_TARGET_MS = 10.0
# Enrichment on may cost at most 10% of the ratio to nginx with it off (being faster is noise, not a failure).
ENRICHMENT_TOLERANCE = 0.10

# --mix realistic: the user agents of the mail user-agent data file (the shared copy when there is one),
# and client addresses that deadpixel believes because they come from a trusted proxy on loopback.
USER_AGENT_FILES = (REPO_DIR.parent / "shared" / "data" / "mail-user-agents.tsv",
                    REPO_DIR / "tests" / "data" / "mail-user-agents.tsv")  # fmt: skip
TRUSTED_PROXY = f"{HOST}/32"
IP_SEED = "deadpixel bench client addresses"  # the same addresses in every run
# Networks whose opens the verdict rules know, with their share of the client addresses.
KNOWN_NETWORKS = (
    ("17.0.0.0/8", 0.20),  # Apple (Mail Privacy Protection fetches)
    ("66.249.80.0/20", 0.05),  # Google (Gmail's image proxy)
    ("40.107.0.0/16", 0.05),  # Microsoft Exchange Online Protection (scanners)
)

WRK_START_SLACK = 0.3  # seconds for wrk to start and connect before the warm-up counts
DRAIN_TIMEOUT = 20.0  # seconds to wait for the last answers once no more requests go out
READY_TIMEOUT = 60.0
IDLE_SHARE = 0.05  # the machine counts as idle while everything together uses less than 5% of a core ...
IDLE_SECONDS = 2.0  # ... for this long
STOP_TIMEOUT = 60.0

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{
    worker_connections 1024;
}}
http {{
    access_log {dir}/access.log;
    # Keep connections open as long as the other servers do, instead of closing every 1,000 requests.
    keepalive_requests 1000000;
    server {{
        listen {host}:{port};
        location /o/ {{
            empty_gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, private, max-age=0";
            add_header Pragma no-cache;
            add_header Expires 0;
        }}
        location = /healthz {{
            access_log off;
            return 200 "ok\\n";
        }}
    }}
}}
"""


class BenchError(Exception):
    """The benchmark could not run (a tool is missing, a server did not start...)."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    connections: int
    workers: int
    messages: int
    database_url: str | None
    latency_seconds: float
    latency_connections: int
    server_cpu: int
    load_cpu: int
    skip_nginx: bool
    skip_naive: bool
    skip_latency: bool
    wait_idle: float
    as_json: bool
    keep: bool
    strict: bool
    mix: str = "plain"
    ips: int = 5000
    compare_enrichment: bool = False
    rounds: int = 2


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="See bench/README.md for what each figure means."
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="Measuring window per server (10).")
    parser.add_argument("--warmup", type=float, default=2.0, help="Load before the window opens (2).")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64).")
    parser.add_argument("--workers", type=int, default=1, help="deadpixel worker processes (1).")
    parser.add_argument("--messages", type=int, default=1000, help="Distinct pixel URLs in rotation (1000).")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL for deadpixel, e.g. postgresql://postgres@127.0.0.1:5432/test; the run uses a "
        "fresh schema that is dropped afterwards. Default: SQLite in a temporary data dir.",
    )
    parser.add_argument("--latency-seconds", type=float, help="Length of the latency run (--seconds).")
    parser.add_argument("--latency-connections", type=int, help="Latency client connections (--connections).")
    parser.add_argument("--server-cpu", type=int, default=0, help="Core the servers are pinned to (0).")
    parser.add_argument("--load-cpu", type=int, default=1, help="Core the load generators are pinned to (1).")
    parser.add_argument("--skip-nginx", action="store_true", help="Do not measure nginx.")
    parser.add_argument("--skip-naive", action="store_true", help="Do not measure the naive tracker.")
    parser.add_argument("--skip-latency", action="store_true", help="Do not measure deadpixel's latency.")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="Before each measurement, wait up to this many seconds for the machine to be idle (60; 0: no).",
    )
    parser.add_argument(
        "--mix",
        choices=("plain", "realistic"),
        default="plain",
        help="plain: bare GETs of the pixel URLs (default). realistic: each request also carries "
        "X-Forwarded-For with one of --ips public addresses and a User-Agent from the mail user-agent data "
        f"file, and deadpixel trusts {TRUSTED_PROXY} as its proxy.",
    )
    parser.add_argument("--ips", type=int, default=5000, help="Client addresses of --mix realistic (5000).")
    parser.add_argument(
        "--compare-enrichment",
        action="store_true",
        help="Measure deadpixel with DEADPIXEL_ENRICHMENT=false and with enrichment on, alternately, and "
        "compare their ratios to nginx (target: within 10%%).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="With --compare-enrichment: runs of each setting, in the order off, on, on, off, ... (2).",
    )
    parser.add_argument("--json", dest="as_json", action="store_true", help="Print JSON instead of tables.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary dir (logs, databases).")
    parser.add_argument("--strict", action="store_true", help="Exit 1 when a performance target is missed.")
    args = parser.parse_args(argv)
    if args.database_url and not args.database_url.startswith(("postgres://", "postgresql")):
        parser.error("--database-url takes a postgresql:// URL (SQLite is the default)")
    if args.server_cpu == args.load_cpu:
        parser.error("--server-cpu and --load-cpu must differ")
    if args.ips < 1 or args.rounds < 1 or args.messages < 1:
        parser.error("--ips, --rounds and --messages must be at least 1")
    return Options(
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        workers=args.workers,
        messages=args.messages,
        database_url=args.database_url,
        latency_seconds=args.latency_seconds or args.seconds,
        latency_connections=args.latency_connections or args.connections,
        server_cpu=args.server_cpu,
        load_cpu=args.load_cpu,
        skip_nginx=args.skip_nginx,
        skip_naive=args.skip_naive,
        skip_latency=args.skip_latency,
        wait_idle=args.wait_idle,
        as_json=args.as_json,
        keep=args.keep,
        strict=args.strict,
        mix=args.mix,
        ips=args.ips,
        compare_enrichment=args.compare_enrichment,
        rounds=args.rounds,
    )


# --- Processes -----------------------------------------------------------------------------------------


class Processes:
    """Starts children pinned to a core, each in its own process group, and stops every one on exit."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A second Ctrl-C during the clean-up must not leave a server running.
        signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            for child in reversed(list(self._children)):
                self.stop(child, signal.SIGTERM, timeout=10)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def start(
        self,
        args: list[str],
        *,
        cpu: int,
        log_file: Path,
        env: dict[str, str] | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Run ``args`` on ``cpu``; stderr (and stdout unless captured) go to ``log_file``."""
        with log_file.open("ab") as output:
            child = subprocess.Popen(
                ["taskset", "-c", str(cpu), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else output,
                stderr=output,
                env=env,
                start_new_session=True,
            )
        self._children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int:
        """Signal ``child`` and wait for it; kill it (and anything left in its group) if it lingers."""
        if child.poll() is None:
            child.send_signal(sig)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"  pid {child.pid} still running {timeout:.0f} s after {sig.name}: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if group_members(child.pid):  # e.g. a worker whose parent died before it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        self.forget(child)
        return child.returncode

    def forget(self, child: subprocess.Popen[bytes]) -> None:
        if child in self._children:
            self._children.remove(child)


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


def wait_until_ready(child: subprocess.Popen[bytes], port: int, name: str, log_file: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise BenchError(f"{name} exited with status {child.returncode}; see {log_file}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, "/healthz", timeout=1.0)[0] == 200:
                return
        time.sleep(0.05)
    raise BenchError(f"{name} did not answer /healthz within {READY_TIMEOUT:.0f} s; see {log_file}")


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def child_env() -> dict[str, str]:
    """Our environment without DEADPIXEL_* settings, so that only what the benchmark sets applies."""
    return {name: value for name, value in os.environ.items() if not name.startswith("DEADPIXEL_")}


# --- CPU accounting from /proc -------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgrp: int
    cpu: float  # seconds: utime + stime, plus cutime + cstime of children already reaped


def read_proc_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)", which may contain spaces
    ticks = sum(int(value) for value in fields[11:15])
    return ProcStat(pid, int(fields[1]), int(fields[2]), ticks / CLOCK_TICKS)


def all_processes() -> dict[int, ProcStat]:
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := read_proc_stat(int(entry.name))) is not None:
            found[stat.pid] = stat
    return found


def group_members(pgid: int) -> list[int]:
    return [stat.pid for stat in all_processes().values() if stat.pgrp == pgid]


def tree_cpu(root: int, processes: dict[int, ProcStat]) -> float:
    """CPU seconds of ``root`` and all its descendants."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in processes.values():
        children[stat.ppid].append(stat.pid)
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        if pid in processes:
            total += processes[pid].cpu
            pending.extend(children[pid])
    return total


def machine_busy_cpu() -> float:
    """CPU seconds all cores spent running processes and the kernel for them (user, nice, system)."""
    with open("/proc/stat") as fh:
        ticks = fh.readline().split()[1:]
    user, nice, system = (int(value) for value in ticks[:3])
    return (user + nice + system) / CLOCK_TICKS


def core_busy_cpu(cpu: int) -> float:
    """CPU seconds one core was not idle: processes, interrupts, softirqs (loopback networking) and steal."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(value) for value in line.split()[1:9]]
                idle, iowait = ticks[3], ticks[4]
                return (sum(ticks) - idle - iowait) / CLOCK_TICKS
    raise BenchError(f"no cpu{cpu} in /proc/stat")


def wait_for_idle_machine(max_wait: float) -> None:
    """Wait until nothing runs (the server under test idles too), so that a busy machine skews no run."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    idle_since, announced = time.monotonic(), False
    while True:
        before = machine_busy_cpu()
        time.sleep(0.25)
        share = (machine_busy_cpu() - before) / 0.25
        now = time.monotonic()
        if share >= IDLE_SHARE:
            idle_since = now
            if not announced:
                log(f"  waiting for the machine to be idle (something uses {share:.0%} of a core)")
                announced = True
        elif now - idle_since >= IDLE_SECONDS:
            return
        if now >= deadline:
            log(f"  the machine is still busy after {max_wait:g} s; measuring anyway")
            return


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    server: float
    generator: float
    database: float
    machine: float
    server_core: float
    load_core: float

    @staticmethod
    def take(server_pid: int, generator_pid: int, database_pids: list[int], opts: Options) -> CpuSnapshot:
        processes = all_processes()
        return CpuSnapshot(
            at=time.monotonic(),
            server=tree_cpu(server_pid, processes),
            generator=tree_cpu(generator_pid, processes),
            database=sum(processes[pid].cpu for pid in database_pids if pid in processes),
            machine=machine_busy_cpu(),
            server_core=core_busy_cpu(opts.server_cpu),
            load_core=core_busy_cpu(opts.load_cpu),
        )


# --- Stores --------------------------------------------------------------------------------------------


KINDS_QUERY = "SELECT kind, count(*) FROM opens GROUP BY kind"
UNCLASSIFIED = "NULL"  # the key under which opens without a kind (enrichment off) are counted


@dataclass(frozen=True)
class RunStore:
    """deadpixel's data for one run (a fresh copy of the prepared data), and how to read what it stored."""

    url: str
    data_dir: Path
    count_opens: Callable[[], int]
    count_kinds: Callable[[], dict[str, int]]
    backend_pids: Callable[[], list[int]] = list


@dataclass(frozen=True)
class Store:
    """Where deadpixel keeps its data: prepared once (keys, schema, messages), then fresh for every run.

    Every deadpixel run starts from the same state, so a later run does not pay for the rows of the ones
    before it, and its stored opens are its own.
    """

    url: str  # of the prepared data, which create_pixels fills
    template_dir: Path
    description: str
    new_run: Callable[[str], RunStore]


def count_sqlite_rows(path: Path, table: str) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def kinds_of(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(kind) if kind is not None else UNCLASSIFIED: int(count) for kind, count in rows}


def count_sqlite_kinds(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return kinds_of(db.execute(KINDS_QUERY).fetchall())
    finally:
        db.close()


def libpq_url(url: str) -> str:
    """The URL as psycopg takes it: SQLAlchemy's ``+driver`` suffix removed."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def deadpixel_store(opts: Options, workdir: Path) -> Iterator[Store]:
    template = workdir / "deadpixel-template"
    if opts.database_url is None:

        def new_run(name: str) -> RunStore:
            data_dir = workdir / name
            shutil.copytree(template, data_dir)  # keys, and the database with its messages
            db_file = data_dir / "deadpixel.db"
            return RunStore(
                url=f"sqlite:///{db_file}",
                data_dir=data_dir,
                count_opens=lambda: count_sqlite_rows(db_file, "opens"),
                count_kinds=lambda: count_sqlite_kinds(db_file),
            )

        yield Store(
            url=f"sqlite:///{template / 'deadpixel.db'}",
            template_dir=template,
            description=f"SQLite in {workdir}/<run>/ on {filesystem_of(workdir)} (WAL, synchronous=FULL)",
            new_run=new_run,
        )
    else:
        with postgres_store(opts.database_url, workdir, template) as store:
            yield store


@contextlib.contextmanager
def postgres_store(url: str, workdir: Path, template: Path) -> Iterator[Store]:
    """A fresh schema for this benchmark, dropped afterwards; its opens are emptied before every run."""
    import psycopg

    conninfo = libpq_url(url)
    schema = f"deadpixel_bench_{os.getpid()}"

    def admin(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def backend_pids() -> list[int]:
        rows = admin(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{PG_APPLICATION_NAME}'")
        return [int(row[0]) for row in rows]

    store_url = with_query(url, options=f"-csearch_path={schema}", application_name=PG_APPLICATION_NAME)

    def new_run(name: str) -> RunStore:
        data_dir = workdir / name
        shutil.copytree(template, data_dir)  # the signing keys; the metrics of this run go here too
        # The message counters keep what earlier runs added: the same work whatever their values.
        admin(f'TRUNCATE "{schema}".opens RESTART IDENTITY')
        admin(f'VACUUM ANALYZE "{schema}".messages')
        return RunStore(
            url=store_url,
            data_dir=data_dir,
            count_opens=lambda: int(admin(f'SELECT count(*) FROM "{schema}".opens')[0][0]),
            count_kinds=lambda: kinds_of(admin(KINDS_QUERY.replace("opens", f'"{schema}".opens'))),
            backend_pids=backend_pids,
        )

    admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield Store(
            url=store_url,
            template_dir=template,
            description=f"PostgreSQL {without_password(url)}, fresh schema {schema}, emptied before each run",
            new_run=new_run,
        )
    finally:
        admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def filesystem_of(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync on tmpfs is free, which would flatter SQLite)."""
    best, kind = "", "unknown"
    with open("/proc/self/mounts") as fh:
        for line in fh:
            _, mount_point, fs_type, *_ = line.split()
            if str(path).startswith(mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def create_pixels(data_dir: Path, database_url: str, count: int, with_send_times: bool = False) -> list[str]:
    """Create ``count`` tracked messages in deadpixel's store and return their pixel paths.

    With ``with_send_times`` every other message has a send time, as if deadpixel had sent it (the timing
    rules then apply to its opens); the others are hand-made pixels.
    """
    env = {"DEADPIXEL_DATA_DIR": str(data_dir), "DEADPIXEL_DATABASE_URL": database_url}
    settings = load_settings(env)
    prepare(settings)  # data dir, signing keys, schema
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            ids = [
                create_message(
                    conn,
                    recipient=f"reader{n}@example.com",
                    campaign=CAMPAIGN,
                    sent_at=time.time() if with_send_times and n % 2 == 0 else None,
                )
                for n in range(count)
            ]
    finally:
        engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return [f"/o/{signer.pixel_token(message_id)}.gif" for message_id in ids]


# --- Requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelRequest:
    path: str
    client_ip: str | None = None  # sent as X-Forwarded-For
    user_agent: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self.client_ip is None or self.user_agent is None:
            return {}
        return {"X-Forwarded-For": self.client_ip, "User-Agent": self.user_agent}

    def line(self) -> str:
        """As wrk_pixels.lua and steady_load.py read it."""
        if self.client_ip is None or self.user_agent is None:
            return self.path
        return f"{self.path}\t{self.client_ip}\t{self.user_agent}"


def user_agent_file() -> Path:
    for path in USER_AGENT_FILES:
        if path.is_file():
            return path
    raise BenchError(f"no mail user-agent data file: looked for {', '.join(map(str, USER_AGENT_FILES))}")


def read_user_agents(path: Path) -> list[str]:
    """The user_agent column of the data file, in its order."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        agents = [row["user_agent"] for row in rows if row.get("user_agent")]
    unsendable = [ua for ua in agents if "\t" in ua or not ua.isascii() or not ua.isprintable()]
    if unsendable or not agents:
        raise BenchError(f"{path}: no user agents, or some that cannot go in a header: {unsendable[:3]}")
    return agents


def client_ips(count: int) -> list[str]:
    """``count`` distinct public IPv4 addresses, the same in every run, in a shuffled order.

    KNOWN_NETWORKS get their share (as far as their size allows), the rest are anywhere in the public
    address space, so some verdicts come from the network and the geo data sees many countries.
    """
    rng = random.Random(IP_SEED)
    known = [ipaddress.IPv4Network(network) for network, _ in KNOWN_NETWORKS]
    chosen: set[int] = set()
    for network, (_, share) in zip(known, KNOWN_NETWORKS, strict=True):
        wanted = min(round(count * share), network.num_addresses // 2)
        first = int(network.network_address)
        while wanted > 0:
            address = first + rng.randrange(1, network.num_addresses - 1)
            if address not in chosen:
                chosen.add(address)
                wanted -= 1
    while len(chosen) < count:
        address = rng.getrandbits(32)
        ip = ipaddress.IPv4Address(address)
        if ip.is_global and not ip.is_multicast and not any(ip in network for network in known):
            chosen.add(address)
    ordered = sorted(chosen)
    rng.shuffle(ordered)
    return [str(ipaddress.IPv4Address(address)) for address in ordered]


def build_requests(paths: list[str], opts: Options) -> list[PixelRequest]:
    """The requests every server gets, in turn. The realistic mix pairs the i-th path, client address and
    user agent, each list taken round and round, over as many requests as there are addresses (or paths)."""
    if opts.mix == "plain":
        return [PixelRequest(path) for path in paths]
    ips = client_ips(opts.ips)
    agents = read_user_agents(user_agent_file())
    return [
        PixelRequest(paths[i % len(paths)], ips[i % len(ips)], agents[i % len(agents)])
        for i in range(max(len(paths), len(ips)))
    ]


def mix_description(opts: Options, requests: list[PixelRequest]) -> str:
    if opts.mix == "plain":
        return "plain: bare GETs, no User-Agent, no X-Forwarded-For"
    agents = len({request.user_agent for request in requests})
    ips = len({request.client_ip for request in requests})
    return (
        f"realistic: {ips:,} client IPs as X-Forwarded-For (deadpixel trusts {TRUSTED_PROXY}), "
        f"{agents} user agents from {user_agent_file()}, {len(requests):,} requests in turn"
    )


# --- Servers -------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    label: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path
    stop_signal: signal.Signals
    stored_opens: Callable[[], int]  # read after the server stopped
    data_dir: Path | None = None  # deadpixel's, where it publishes its counters
    stored_label: str = "rows in opens"
    database_pids: Callable[[], list[int]] = list
    stored_kinds: Callable[[], dict[str, int]] | None = None  # deadpixel's opens by verdict
    enrichment: bool | None = None  # deadpixel with DEADPIXEL_ENRICHMENT set (--compare-enrichment)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def deadpixel_command() -> str:
    beside_python = Path(sys.executable).with_name("deadpixel")
    found = str(beside_python) if beside_python.exists() else shutil.which("deadpixel")
    if found is None:
        raise BenchError("the deadpixel command is not installed (pip install -e '.[bench]')")
    return found


def start_deadpixel(
    procs: Processes,
    opts: Options,
    workdir: Path,
    store: Store,
    enrichment: bool | None = None,
    run_number: int = 1,
) -> Server:
    """deadpixel on a fresh copy of the prepared data; ``enrichment`` None leaves it at its default (on)."""
    if enrichment is None:
        name = "deadpixel"
        label = f"deadpixel ({opts.workers} worker{'s' if opts.workers > 1 else ''})"
    else:
        name = f"deadpixel-{'on' if enrichment else 'off'}-{run_number}"
        label = f"deadpixel, enrichment {'on' if enrichment else 'off'} ({run_number})"
    run_store = store.new_run(name)
    port = free_port()
    log_file = workdir / f"{name}.log"
    env = child_env() | {
        "DEADPIXEL_DATA_DIR": str(run_store.data_dir),
        "DEADPIXEL_DATABASE_URL": run_store.url,
        # Every answered open is stored, as the exactness check expects: the load sends each of its 1,000
        # pixels hundreds of times a minute, which the default cap would mostly count instead of store.
        "DEADPIXEL_OPEN_CAP": "0",
    }
    if opts.mix == "realistic":
        env["DEADPIXEL_TRUSTED_PROXIES"] = TRUSTED_PROXY  # believe the load's X-Forwarded-For
    if enrichment is not None:
        env["DEADPIXEL_ENRICHMENT"] = "true" if enrichment else "false"
    command = [deadpixel_command(), "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(opts.workers)]
    process = procs.start(command, cpu=opts.server_cpu, log_file=log_file, env=env)
    return Server(
        name=name,
        label=label,
        port=port,
        process=process,
        log_file=log_file,
        stop_signal=signal.SIGTERM,  # drains the queue of pending writes before it exits
        stored_opens=run_store.count_opens,
        database_pids=run_store.backend_pids,
        data_dir=run_store.data_dir,
        stored_kinds=run_store.count_kinds,
        enrichment=enrichment,
    )


def start_nginx(procs: Processes, opts: Options, workdir: Path) -> Server:
    port = free_port()
    home = workdir / "nginx"
    home.mkdir()
    conf = home / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=home, host=HOST, port=port))
    log_file = home / "stderr.log"
    command = ["nginx", "-c", str(conf), "-p", str(home), "-e", str(home / "error.log")]
    process = procs.start(command, cpu=opts.server_cpu, log_file=log_file)
    return Server(
        name="nginx",
        label="nginx empty_gif",
        port=port,
        process=process,
        log_file=log_file,
        stop_signal=signal.SIGQUIT,  # graceful: finish the requests in hand, then exit
        stored_opens=lambda: count_lines(home / "access.log"),
        stored_label="access log lines",
    )


def start_naive(procs: Processes, opts: Options, workdir: Path) -> Server:
    port = free_port()
    db_file = workdir / "naive.db"
    log_file = workdir / "naive.log"
    command = [sys.executable, str(NAIVE_TRACKER), "--host", HOST, "--port", str(port), "--db", str(db_file)]
    process = procs.start(command, cpu=opts.server_cpu, log_file=log_file, env=child_env())
    return Server(
        name="naive",
        label="naive Flask+SQLite",
        port=port,
        process=process,
        log_file=log_file,
        stop_signal=signal.SIGTERM,
        stored_opens=lambda: count_sqlite_rows(db_file, "opens"),
    )


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def probe(server: Server, request: PixelRequest) -> None:
    """One pixel by hand: the server must answer 200 with a 43-byte GIF before it is worth loading."""
    status, content_type, body = http_get(server.port, request.path, headers=request.headers)
    if status != 200 or content_type != "image/gif" or len(body) != len(GIF):
        raise BenchError(
            f"{server.name} answered {request.path} with {status} {content_type} ({len(body)} bytes)"
        )


# --- deadpixel's own counters ------------------------------------------------------------------------------


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
        from deadpixel.metrics import metrics_dir, read_metrics

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


# --- Load ----------------------------------------------------------------------------------------------


@dataclass
class Throughput:
    """One wrk run: the figures of the measuring window, and the totals the exactness check needs."""

    seconds: float  # the measuring window, as wrk_pixels.lua counted it
    sampled_seconds: float  # between the two readings of /proc, a few ms later: the divisor for CPU shares
    ok: int  # 200 answers inside the window
    answers: int  # all answers inside the window
    ok_total: int  # 200 answers of the whole run: warm-up, window and drain
    other_total: int  # answers with another status in the whole run
    socket_errors: int
    drained: bool  # no request was in flight when wrk stopped
    server_cpu: float
    generator_cpu: float
    database_cpu: float
    other_cpu: float  # CPU seconds of every other process (and kernel thread) on the machine
    server_core: float  # CPU seconds the server's core was busy, softirqs and steal included
    load_core: float  # the same for the load generator's core

    @property
    def rps(self) -> float:
        return self.ok / self.seconds

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu / self.answers * 1e6 if self.answers else math.nan

    @property
    def database_us_per_request(self) -> float:
        return self.database_cpu / self.answers * 1e6 if self.answers else math.nan

    def busy(self, cpu_seconds: float) -> float:
        """Share of one core."""
        return cpu_seconds / self.sampled_seconds


def wait_for_file(path: Path, timeout: float, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists():
            return True
        time.sleep(0.02)
    return path.exists()


def parse_wrk_output(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise BenchError(f"wrk printed no result:\n{output}")


def measure_throughput(
    procs: Processes, server: Server, opts: Options, paths_file: Path, workdir: Path
) -> Throughput:
    drained_file = workdir / f"{server.name}.drained"
    wait_for_idle_machine(opts.wait_idle)
    warm_until = time.monotonic() + WRK_START_SLACK + opts.warmup
    measure_until = warm_until + opts.seconds
    limit = math.ceil(WRK_START_SLACK + opts.warmup + opts.seconds + DRAIN_TIMEOUT) + 5
    command = ["wrk", "-t1", f"-c{opts.connections}", f"-d{limit}s", "--timeout", "10s"]
    command += ["-s", str(WRK_SCRIPT), server.url, "--", str(paths_file), str(opts.connections)]
    command += [f"{warm_until:.6f}", f"{measure_until:.6f}", str(drained_file)]
    wrk = procs.start(command, cpu=opts.load_cpu, log_file=workdir / f"wrk-{server.name}.log", capture=True)

    database_pids = server.database_pids()
    sleep_until(warm_until)
    before = CpuSnapshot.take(server.process.pid, wrk.pid, database_pids, opts)
    sleep_until(measure_until)
    after = CpuSnapshot.take(server.process.pid, wrk.pid, database_pids, opts)

    # No request goes out after the window; once the last answer is in, the script says so.
    wait_for_file(drained_file, DRAIN_TIMEOUT, wrk)
    if wrk.poll() is None:
        wrk.send_signal(signal.SIGINT)  # ends wrk's sleep; it still prints its results
    output, _ = wrk.communicate(timeout=30)
    procs.forget(wrk)
    result = parse_wrk_output(output.decode())

    server_cpu = after.server - before.server
    generator_cpu = after.generator - before.generator
    database_cpu = after.database - before.database
    return Throughput(
        seconds=measure_until - warm_until,
        sampled_seconds=after.at - before.at,
        ok=result["ok_window"],
        answers=result["answers_window"],
        ok_total=result["ok_total"],
        other_total=result["other_total"],
        socket_errors=result["errors_connect"] + result["errors_read"] + result["errors_write"],
        drained=result["drained"],
        server_cpu=server_cpu,
        generator_cpu=generator_cpu,
        database_cpu=database_cpu,
        other_cpu=max(0.0, after.machine - before.machine - server_cpu - generator_cpu - database_cpu),
        server_core=after.server_core - before.server_core,
        load_core=after.load_core - before.load_core,
    )


@dataclass
class Latency:
    rate: float
    seconds: float
    connections: int
    sent: int
    queued: int
    ok: int
    other_status: int
    unanswered: int
    lost_connections: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    slowest_seconds: list[dict[str, float]]
    warmup: float


def measure_latency(
    procs: Processes, server: Server, opts: Options, paths_file: Path, workdir: Path, rate: float
) -> Latency:
    wait_for_idle_machine(opts.wait_idle)
    command = [sys.executable, str(STEADY_LOAD), "--host", HOST, "--port", str(server.port)]
    command += ["--paths", str(paths_file), "--rate", f"{rate:.1f}", "--seconds", str(opts.latency_seconds)]
    command += ["--connections", str(opts.latency_connections), "--warmup", str(opts.warmup)]
    log_file = workdir / f"steady_load-{server.name}.log"
    client = procs.start(command, cpu=opts.load_cpu, log_file=log_file, env=child_env(), capture=True)
    output, _ = client.communicate(timeout=opts.warmup + opts.latency_seconds + 60)
    procs.forget(client)
    if client.returncode != 0:
        raise BenchError(f"the latency client failed; see {log_file}")
    figures = json.loads(output)
    return Latency(**{name: figures[name] for name in Latency.__dataclass_fields__})


# --- One server, start to finish -----------------------------------------------------------------------


@dataclass
class ServerResult:
    name: str
    label: str
    throughput: Throughput
    answered_ok: int  # every 200 the benchmark received from this server
    stored: int  # what the server recorded: rows in opens (nginx: access log lines)
    stored_label: str
    exit_code: int
    latency: Latency | None = None
    writer_saturated: WriterStats | None = None  # deadpixel's batches during warm-up and window
    writer_half_load: WriterStats | None = None  # and during the latency run
    kinds: dict[str, int] | None = None  # deadpixel's stored opens by verdict (UNCLASSIFIED: no kind)
    enrichment: bool | None = None  # set when --compare-enrichment chose it

    @property
    def exact(self) -> bool:
        return self.stored == self.answered_ok

    @property
    def is_deadpixel(self) -> bool:
        return self.name.startswith("deadpixel")


def bench_server(
    procs: Processes,
    server: Server,
    opts: Options,
    first: PixelRequest,
    paths_file: Path,
    workdir: Path,
    latency_at_half: bool = False,
) -> ServerResult:
    wait_until_ready(server.process, server.port, server.name, server.log_file)
    probe(server, first)
    answered_ok = 1
    writer_start = read_writer_stats(server.data_dir) if server.data_dir else None
    log(f"{server.label}: {opts.warmup:g} s warm-up, {opts.seconds:g} s at {opts.connections} connections")
    throughput = measure_throughput(procs, server, opts, paths_file, workdir)
    answered_ok += throughput.ok_total
    log(f"  {throughput.rps:,.0f} answers/s, {throughput.cpu_us_per_request:,.1f} µs of server CPU each")
    writer_saturated = writer_half_load = None
    writer_after_load = read_writer_stats(server.data_dir) if server.data_dir else None
    if writer_start and writer_after_load:
        writer_saturated = writer_after_load.since(writer_start)

    latency = None
    if latency_at_half:
        rate = throughput.rps / 2
        log(f"{server.label}: latency at a steady {rate:,.0f}/s for {opts.latency_seconds:g} s")
        latency = measure_latency(procs, server, opts, paths_file, workdir, rate)
        answered_ok += latency.ok
        log(f"  p50 {latency.p50_ms:.2f} ms, p99 {latency.p99_ms:.2f} ms, max {latency.max_ms:.2f} ms")
        writer_end = read_writer_stats(server.data_dir) if server.data_dir else None
        if writer_after_load and writer_end:
            writer_half_load = writer_end.since(writer_after_load)

    exit_code = procs.stop(server.process, server.stop_signal)
    stored = server.stored_opens()
    log(f"  stopped (exit {exit_code}); {server.stored_label}: {stored:,}, 200 answers: {answered_ok:,}")
    kinds = server.stored_kinds() if server.stored_kinds else None
    if kinds is not None:
        log(f"  stored opens by kind: {kinds_text(kinds)}")
    return ServerResult(
        name=server.name,
        label=server.label,
        throughput=throughput,
        answered_ok=answered_ok,
        stored=stored,
        stored_label=server.stored_label,
        exit_code=exit_code,
        latency=latency,
        writer_saturated=writer_saturated,
        writer_half_load=writer_half_load,
        kinds=kinds,
        enrichment=server.enrichment,
    )


def kinds_text(kinds: dict[str, int]) -> str:
    ordered = sorted(kinds.items(), key=lambda item: (item[0] == UNCLASSIFIED, -item[1]))
    return ", ".join(f"{kind} {count:,}" for kind, count in ordered)


# --- Verdict -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    target: str
    passed: bool
    correctness: bool  # failing one makes the exit status 1; missing a target does so only with --strict


@dataclass(frozen=True)
class EnrichmentComparison:
    """deadpixel's runs with enrichment off and on (--compare-enrichment), each list in run order."""

    off: list[ServerResult]
    on: list[ServerResult]
    nginx_rps: float | None

    @staticmethod
    def of(servers: dict[str, ServerResult]) -> EnrichmentComparison | None:
        off = [result for result in servers.values() if result.enrichment is False]
        on = [result for result in servers.values() if result.enrichment is True]
        if not off or not on:
            return None
        nginx = servers.get("nginx")
        return EnrichmentComparison(off, on, nginx.throughput.rps if nginx else None)

    @property
    def off_rps(self) -> float:
        return mean_rps(self.off)

    @property
    def on_rps(self) -> float:
        return mean_rps(self.on)

    @property
    def difference(self) -> float:
        """Relative difference of the ratios to nginx (the same as of the mean throughputs): on / off - 1."""
        return self.on_rps / self.off_rps - 1

    @property
    def round_differences(self) -> list[float]:
        """on / off - 1 for each round: how much the comparison varies from round to round."""
        return [
            on.throughput.rps / off.throughput.rps - 1 for off, on in zip(self.off, self.on, strict=False)
        ]

    @property
    def passed(self) -> bool:
        return self.difference >= -ENRICHMENT_TOLERANCE

    def ratio(self, rps: float) -> float | None:
        return rps / self.nginx_rps if self.nginx_rps else None


def mean_rps(results: list[ServerResult]) -> float:
    return sum(result.throughput.rps for result in results) / len(results)


def mean_cpu_us(results: list[ServerResult]) -> float:
    return sum(result.throughput.cpu_us_per_request for result in results) / len(results)


def spread(results: list[ServerResult]) -> float:
    """How far apart the fastest and the slowest run are (max / min - 1)."""
    rates = [result.throughput.rps for result in results]
    return max(rates) / min(rates) - 1 if min(rates) > 0 else math.inf


@dataclass
class Report:
    config: dict[str, Any]
    servers: dict[str, ServerResult]
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    comparison: EnrichmentComparison | None = None

    @property
    def correct(self) -> bool:
        return all(check.passed for check in self.checks if check.correctness)

    @property
    def targets_met(self) -> bool:
        return all(check.passed for check in self.checks if not check.correctness)


def ratio_check(name: str, ours: float, theirs: float, target: float, stretch: float | None = None) -> Check:
    ratio = ours / theirs if theirs else math.inf
    value = f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"
    wanted = f">= {target:g}" + (f" (stretch {stretch:g})" if stretch else "")
    if stretch and ratio >= stretch:
        value += " (stretch met)"
    return Check(name, value, wanted, ratio >= target, correctness=False)


def exactness_check(result: ServerResult) -> Check:
    difference = result.stored - result.answered_ok
    what = "lost" if difference < 0 else "extra"
    value = "0" if difference == 0 else f"{abs(difference):,} {what}"
    value += f" ({result.stored:,} {result.stored_label} / {result.answered_ok:,} answered)"
    name = f"{result.name}: opens lost or extra" if result.name != "nginx" else "nginx: log lines = 200s"
    return Check(name, value, "0", result.exact, correctness=True)


def headline(servers: dict[str, ServerResult]) -> tuple[str, float]:
    """deadpixel's throughput as the targets judge it: with --compare-enrichment, the mean with it on."""
    if "deadpixel" in servers:
        return "deadpixel", servers["deadpixel"].throughput.rps
    on = [result for result in servers.values() if result.enrichment]
    return f"deadpixel (enrichment on, mean of {len(on)})", mean_rps(on)


def comparison_check(comparison: EnrichmentComparison) -> Check:
    value = f"{comparison.difference:+.1%}"
    on_ratio, off_ratio = comparison.ratio(comparison.on_rps), comparison.ratio(comparison.off_rps)
    if on_ratio is not None and off_ratio is not None:
        value += f" ({on_ratio:.3f} vs {off_ratio:.3f})"
    else:
        value += f" ({comparison.on_rps:,.0f}/s vs {comparison.off_rps:,.0f}/s)"
    target = f"at most {ENRICHMENT_TOLERANCE:.0%} slower"
    return Check("enrichment on vs off, ratio to nginx", value, target, comparison.passed, correctness=False)


def enrichment_ran_check(result: ServerResult) -> Check:
    """With enrichment on every stored open has a kind; with it off none has: else the comparison is void."""
    assert result.kinds is not None
    total = sum(result.kinds.values())
    classified = total - result.kinds.get(UNCLASSIFIED, 0)
    wanted = total if result.enrichment else 0
    value = f"{classified:,} of {total:,}"
    target = "all" if result.enrichment else "none"
    return Check(f"{result.name}: opens with a kind", value, target, classified == wanted, correctness=True)


def build_checks(servers: dict[str, ServerResult]) -> list[Check]:
    checks = []
    name, rps = headline(servers)
    if "nginx" in servers:
        nginx_rps = servers["nginx"].throughput.rps
        checks.append(ratio_check(f"{name} / nginx", rps, nginx_rps, NGINX_RATIO_TARGET, NGINX_RATIO_STRETCH))
    if "naive" in servers:
        naive_rps = servers["naive"].throughput.rps
        checks.append(ratio_check(f"{name} / naive", rps, naive_rps, NAIVE_RATIO_TARGET))
    if (comparison := EnrichmentComparison.of(servers)) is not None:
        checks.append(comparison_check(comparison))
    checks.extend(exactness_check(result) for result in servers.values())
    checks.extend(
        enrichment_ran_check(result)
        for result in servers.values()
        if result.enrichment is not None and result.kinds is not None
    )
    for result in servers.values():
        if result.is_deadpixel and result.latency is not None:
            p99 = result.latency.p99_ms
            value, target = f"{p99:.2f} ms", f"< {P99_TARGET_MS:g} ms"
            checks.append(Check(f"{result.name} p99 at half load", value, target, p99 < P99_TARGET_MS, False))
    return checks


def build_warnings(servers: dict[str, ServerResult]) -> list[str]:
    warnings = []
    for result in servers.values():
        run = result.throughput
        if not run.drained:
            warnings.append(f"{result.name}: requests were still in flight when wrk stopped")
        if run.socket_errors:
            warnings.append(f"{result.name}: {run.socket_errors} socket errors (requests that may be lost)")
        if run.other_total:
            warnings.append(f"{result.name}: {run.other_total} answers with a status other than 200")
        load_core, server_core = run.busy(run.load_core), run.busy(run.server_core)
        if load_core > 0.95 and server_core < 0.95:
            warnings.append(
                f"{result.name}: the load core was {load_core:.0%} busy and the server's {server_core:.0%}: "
                "the load generator may be the bottleneck"
            )
        if run.busy(run.other_cpu) > 0.05:
            warnings.append(
                f"{result.name}: other processes took {run.busy(run.other_cpu):.0%} of a core meanwhile: "
                "the figures may be disturbed"
            )
        latency = result.latency
        if latency is not None:
            if latency.unanswered or latency.other_status or latency.lost_connections:
                warnings.append(
                    f"{result.name} latency run: {latency.unanswered} unanswered, {latency.other_status} "
                    f"non-200, {latency.lost_connections} connections lost"
                )
            if latency.lag_p99_ms > 1.0:
                warnings.append(
                    f"{result.name} latency run: the client itself ran {latency.lag_p99_ms:.2f} ms late (p99)"
                )
    if (comparison := EnrichmentComparison.of(servers)) is not None:
        for setting, runs in (("off", comparison.off), ("on", comparison.on)):
            if len(runs) > 1 and spread(runs) > ENRICHMENT_TOLERANCE / 2:
                warnings.append(
                    f"the runs with enrichment {setting} differ by {spread(runs):.1%} among themselves: the "
                    f"machine is too noisy to resolve a {ENRICHMENT_TOLERANCE:.0%} difference reliably"
                )
    return warnings


# --- Output --------------------------------------------------------------------------------------------


def table(rows: list[list[str]], numbers: bool = True) -> str:
    """Columns padded to their widest cell; with ``numbers``, every column but the first right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if numbers and i > 0 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def server_table(servers: dict[str, ServerResult], server_cpu: int, load_cpu: int) -> str:
    """Shares are of one core: the server's processes, its whole core, wrk, the load core, everything else."""
    with_database = any(result.throughput.database_cpu > 0 for result in servers.values())
    header = ["server", "200/s", "CPU µs/req", "server CPU", f"cpu{server_cpu} busy", "wrk CPU"]
    header += [f"cpu{load_cpu} busy", "other CPU", "non-200", "sock err"]
    if with_database:
        header[3:3] = ["DB µs/req"]
    rows = [header]
    for result in servers.values():
        run = result.throughput
        row = [
            result.label,
            f"{run.rps:,.0f}",
            f"{run.cpu_us_per_request:,.1f}",
            f"{run.busy(run.server_cpu):.0%}",
            f"{run.busy(run.server_core):.0%}",
            f"{run.busy(run.generator_cpu):.0%}",
            f"{run.busy(run.load_core):.0%}",
            f"{run.busy(run.other_cpu):.0%}",
            f"{run.other_total:,}",
            f"{run.socket_errors:,}",
        ]
        if with_database:
            row[3:3] = [f"{run.database_us_per_request:,.1f}" if run.database_cpu else "-"]
        rows.append(row)
    return table(rows)


def latency_text(result: ServerResult) -> str:
    latency = result.latency
    assert latency is not None
    slowest = ", ".join(
        f"{s['second']:.0f}: p99 {s['p99_ms']:.1f} / max {s['max_ms']:.1f} ms"
        for s in sorted(latency.slowest_seconds, key=lambda s: -s["max_ms"])[:3]
    )
    return (
        f"{result.label} latency at a steady {latency.rate:,.0f}/s (half its throughput), "
        f"{latency.connections} connections, {latency.seconds:g} s after {latency.warmup:g} s at that rate:\n"
        f"  p50 {latency.p50_ms:.2f} ms   p90 {latency.p90_ms:.2f} ms   p99 {latency.p99_ms:.2f} ms   "
        f"p99.9 {latency.p999_ms:.2f} ms   max {latency.max_ms:.2f} ms\n"
        f"  slowest seconds {slowest}\n"
        f"  {latency.ok:,} answered 200; {latency.queued:,} waited for a free connection; "
        f"client lag behind schedule p99 {latency.lag_p99_ms:.2f} ms"
    )


def writer_text(result: ServerResult) -> str:
    lines = [f"{result.label} group commit (from its own counters):"]
    phases = [("under full load", result.writer_saturated), ("at half load", result.writer_half_load)]
    for phase, stats in phases:
        if stats is not None and stats.batches:
            lines.append(
                f"  {phase}: {stats.batches:,} batches of {stats.mean_batch:,.1f} opens on average, "
                f"{stats.mean_commit_ms:.2f} ms per commit"
            )
    return "\n".join(lines) if len(lines) > 1 else ""


def comparison_text(comparison: EnrichmentComparison) -> str:
    lines = ["enrichment off vs on (deadpixel, in run order):"]
    for setting, runs in (("off", comparison.off), ("on", comparison.on)):
        rates = ", ".join(f"{result.throughput.rps:,.0f}" for result in runs)
        rps = mean_rps(runs)
        ratio = comparison.ratio(rps)
        line = f"  enrichment {setting + ':':4} {rates} 200/s; mean {rps:,.0f}/s"
        line += f" = {ratio:.3f} of nginx" if ratio is not None else ""
        line += f"; {mean_cpu_us(runs):,.1f} CPU µs/req"
        if len(runs) > 1:
            line += f"; runs {spread(runs):.1%} apart"
        lines.append(line)
    rounds = ", ".join(f"{difference:+.1%}" for difference in comparison.round_differences)
    verdict = "PASS" if comparison.passed else "FAIL"
    lines.append(
        f"  on vs off: {comparison.difference:+.1%} (round by round: {rounds}); "
        f"at most {ENRICHMENT_TOLERANCE:.0%} slower: {verdict}"
    )
    # CPU per request moves far less with other load on the machine than throughput does.
    off_cpu, on_cpu = mean_cpu_us(comparison.off), mean_cpu_us(comparison.on)
    if off_cpu:
        lines.append(f"  server CPU per request, on vs off: {on_cpu / off_cpu - 1:+.1%}")
    return "\n".join(lines)


def kinds_table(servers: dict[str, ServerResult]) -> str:
    """Stored opens by kind (SELECT kind, count(*) FROM opens GROUP BY kind) for each deadpixel run."""
    results = [result for result in servers.values() if result.kinds is not None]
    if not results:
        return ""
    kinds = sorted(
        {kind for result in results for kind in result.kinds or {}}, key=lambda k: (k == UNCLASSIFIED, k)
    )
    rows = [["stored opens by kind", *kinds, "total"]]
    for result in results:
        counts = result.kinds or {}
        rows.append(
            [result.label, *(f"{counts.get(kind, 0):,}" for kind in kinds), f"{sum(counts.values()):,}"]
        )
    return table(rows)


def check_table(checks: list[Check]) -> str:
    rows = [["check", "value", "target", "result"]]
    rows += [[c.name, c.value, c.target, "PASS" if c.passed else "FAIL"] for c in checks]
    return table(rows, numbers=False)


def print_report(report: Report) -> None:
    config = report.config
    print(
        f"deadpixel pixel benchmark: {config['seconds']:g} s per server after a {config['warmup']:g} s "
        f"warm-up, wrk -t1 -c{config['connections']}, {config['messages']:,} pixel URLs in turn"
    )
    print(f"servers on CPU {config['server_cpu']}, load generators on CPU {config['load_cpu']}")
    print(f"deadpixel store: {config['store']}")
    print(f"request mix: {config['mix_description']}")
    print()
    print(server_table(report.servers, config["server_cpu"], config["load_cpu"]))
    for result in report.servers.values():
        if not result.is_deadpixel:
            continue
        if result.latency is not None:
            print()
            print(latency_text(result))
        if text := writer_text(result):
            print(text)
    if report.comparison is not None:
        print()
        print(comparison_text(report.comparison))
    if text := kinds_table(report.servers):
        print()
        print(text)
    print()
    print(check_table(report.checks))
    for warning in report.warnings:
        print(f"warning: {warning}")


def report_json(report: Report) -> dict[str, Any]:
    servers = {}
    for name, result in report.servers.items():
        run = result.throughput
        servers[name] = {
            "label": result.label,
            "rps": run.rps,
            "cpu_us_per_request": run.cpu_us_per_request,
            "database_cpu_us_per_request": run.database_us_per_request if run.database_cpu else None,
            "server_cpu_share": run.busy(run.server_cpu),
            "generator_cpu_share": run.busy(run.generator_cpu),
            "other_cpu_share": run.busy(run.other_cpu),
            "server_core_busy": run.busy(run.server_core),
            "load_core_busy": run.busy(run.load_core),
            "throughput": asdict(run),
            "answered_ok": result.answered_ok,
            "stored": result.stored,
            "stored_label": result.stored_label,
            "exact": result.exact,
            "exit_code": result.exit_code,
            "latency": asdict(result.latency) if result.latency else None,
            "writer_saturated": asdict(result.writer_saturated) if result.writer_saturated else None,
            "writer_half_load": asdict(result.writer_half_load) if result.writer_half_load else None,
            "enrichment": result.enrichment,
            "kinds": result.kinds,
        }
    comparison = None
    if (found := report.comparison) is not None:
        comparison = {
            "off_runs": [result.name for result in found.off],
            "on_runs": [result.name for result in found.on],
            "off_rps": found.off_rps,
            "on_rps": found.on_rps,
            "off_ratio_to_nginx": found.ratio(found.off_rps),
            "on_ratio_to_nginx": found.ratio(found.on_rps),
            "difference": found.difference,
            "round_differences": found.round_differences,
            "tolerance": ENRICHMENT_TOLERANCE,
            "passed": found.passed,
        }
    return {
        "config": report.config,
        "servers": servers,
        "enrichment_comparison": comparison,
        "checks": [asdict(check) for check in report.checks],
        "warnings": report.warnings,
        "correct": report.correct,
        "targets_met": report.targets_met,
    }


# --- Main ----------------------------------------------------------------------------------------------


def require_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset", "nginx") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: apt-get install wrk nginx-light util-linux")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchError("needs two cores: one for the servers, one for the load")


@dataclass(frozen=True)
class Step:
    server: str  # "deadpixel", "nginx" or "naive"
    enrichment: bool | None = None  # deadpixel with DEADPIXEL_ENRICHMENT set (--compare-enrichment)
    run_number: int = 1
    latency: bool = False


def plan(opts: Options) -> list[Step]:
    """The runs in order. With --compare-enrichment the settings alternate off, on, on, off, off, on... so
    that a drift of the machine's speed weighs on both alike, and nginx runs in the middle of them."""
    if opts.compare_enrichment:
        steps = []
        for number in range(1, opts.rounds + 1):
            order = (False, True) if number % 2 else (True, False)
            latency = number == 1 and not opts.skip_latency  # once for each setting
            steps += [Step("deadpixel", enrichment, number, latency) for enrichment in order]
        nginx_at = 2 * math.ceil(opts.rounds / 2)
    else:
        steps = [Step("deadpixel", latency=not opts.skip_latency)]
        nginx_at = 1
    if not opts.skip_nginx:
        steps.insert(nginx_at, Step("nginx"))
    if not opts.skip_naive:
        steps.append(Step("naive"))
    return steps


def run(opts: Options, workdir: Path) -> Report:
    servers: dict[str, ServerResult] = {}
    # The store is entered first so that it is dropped last, after every server has stopped.
    with deadpixel_store(opts, workdir) as store, Processes() as procs:
        log(f"creating {opts.messages:,} tracked messages ({store.description})")
        paths = create_pixels(store.template_dir, store.url, opts.messages, opts.mix == "realistic")
        requests = build_requests(paths, opts)
        paths_file = workdir / "requests.txt"
        paths_file.write_text("".join(request.line() + "\n" for request in requests))
        mix = mix_description(opts, requests)
        log(f"request mix: {mix}")

        for step in plan(opts):
            if step.server == "deadpixel":
                server = start_deadpixel(procs, opts, workdir, store, step.enrichment, step.run_number)
            elif step.server == "nginx":
                server = start_nginx(procs, opts, workdir)
            else:
                server = start_naive(procs, opts, workdir)
            servers[server.name] = bench_server(
                procs, server, opts, requests[0], paths_file, workdir, latency_at_half=step.latency
            )

    config = {key: value for key, value in asdict(opts).items() if key not in ("as_json", "keep", "strict")}
    config["store"] = store.description
    config["database_url"] = opts.database_url and without_password(opts.database_url)
    config["mix_description"] = mix
    report = Report(config=config, servers=servers, comparison=EnrichmentComparison.of(servers))
    report.checks = build_checks(servers)
    report.warnings = build_warnings(servers)
    return report


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # Ctrl-C (even if SIGINT was ignored at start) and SIGTERM unwind: the servers get stopped either way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="deadpixel-bench-"))
    keep = opts.keep
    try:
        require_tools()
        os.sched_setaffinity(0, {opts.load_cpu})  # this script must not take time from the servers' core
        report = run(opts, workdir)
        keep = keep or not report.correct
    except BenchError as exc:
        log(f"error: {exc}")
        keep = True
        return 1
    except KeyboardInterrupt:
        log("interrupted; every process the benchmark started has been stopped")
        return 130
    finally:
        if keep:
            log(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if opts.as_json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print_report(report)
    if not report.correct:
        log("error: what the servers stored differs from the 200 answers they gave")
        return 1
    if opts.strict and not report.targets_met:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
