"""One server from start to finish: ready, probed, loaded, stopped, and what it stored counted."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.common import log
from harness.counters import WriterStats, read_writer_stats
from harness.load import Latency, Throughput, measure_latency, measure_throughput
from harness.mix import PixelRequest
from harness.options import Options
from harness.processes import Processes, wait_until_ready
from harness.servers import Server, probe
from harness.stores import UNCLASSIFIED


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
