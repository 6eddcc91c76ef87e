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

import json
import math
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.common import BenchError, log
from harness.mix import build_requests, mix_description
from harness.options import Options, parse_args
from harness.output import print_report, report_json
from harness.processes import Processes, require_tools
from harness.runs import ServerResult, bench_server
from harness.servers import start_deadpixel, start_naive, start_nginx
from harness.stores import create_pixels, deadpixel_store, without_password
from harness.verdict import EnrichmentComparison, Report, build_checks, build_warnings


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
    opts = parse_args(argv, description=__doc__.split("\n\n")[0])
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
