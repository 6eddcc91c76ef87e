"""Load generation: wrk at saturation (closed loop) and steady_load.py at a fixed rate (open loop)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common import BENCH_DIR, HOST, BenchError, child_env, sleep_until
from harness.cpu import CpuSnapshot, wait_for_idle_machine
from harness.options import Options
from harness.processes import Processes
from harness.servers import Server

WRK_SCRIPT = BENCH_DIR / "wrk_pixels.lua"
STEADY_LOAD = BENCH_DIR / "steady_load.py"
WRK_START_SLACK = 0.3  # seconds for wrk to start and connect before the warm-up counts
DRAIN_TIMEOUT = 20.0  # seconds to wait for the last answers once no more requests go out


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
