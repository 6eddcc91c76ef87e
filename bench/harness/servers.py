"""The servers under test: deadpixel, nginx's empty_gif (the ceiling) and the naive tracker (the floor)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deadpixel.track.pixel import GIF
from harness.common import BENCH_DIR, HOST, TRUSTED_PROXY, BenchError, child_env, free_port, http_get
from harness.mix import PixelRequest
from harness.options import Options
from harness.processes import Processes, deadpixel_command
from harness.stores import Store, count_sqlite_rows

NAIVE_TRACKER = BENCH_DIR / "naive_tracker.py"
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
