"""CPU accounting from /proc: a process tree's CPU time, each core's busy time, waiting for idleness."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.common import BenchError, log
from harness.options import Options

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_SHARE = 0.05  # the machine counts as idle while everything together uses less than 5% of a core ...
IDLE_SECONDS = 2.0  # ... for this long


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
