"""CPU and wall time of the test suite's server starts: a new interpreter per start, or a fork of the tests'
fork server (tests/forkserver.py). Run from the repository root: ``python bench/server_start.py 8``."""

from __future__ import annotations

import os
import subprocess
import sys


def one_mode(fork: bool, starts: int) -> tuple[float, float]:
    """Start and stop ``starts`` servers on prepared SQLite stores, in a process of its own; return wall
    seconds per start and CPU seconds of all its children (fork server included) per start."""
    code = f"""
import os, resource, sys, tempfile, time
sys.path.insert(0, os.getcwd())
os.environ["DEADPIXEL_TEST_FORK_SERVER"] = "{int(fork)}"
from tests import conftest
from deadpixel.config import load_settings
from deadpixel.server.start import prepare
envs = []
for _ in range({starts}):
    d = tempfile.mkdtemp()
    env = {{"DEADPIXEL_DATA_DIR": d + "/data", "DEADPIXEL_DATABASE_URL": f"sqlite:///{{d}}/s.db"}}
    prepare(load_settings(env))
    envs.append(env)
began = time.monotonic()
for env in envs:
    assert conftest.Server(env=env).start().stop() == 0
wall = time.monotonic() - began
conftest.forkserver._server.close()
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(wall / {starts}, (used.ru_utime + used.ru_stime) / {starts})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall, cpu = done.stdout.split()
    return float(wall), float(cpu)


def main() -> None:
    starts = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    os.environ.setdefault("PYTEST_XDIST_WORKER", "gw7")  # a port block of its own, apart from a running suite
    print(f"{starts} starts each, load average {os.getloadavg()[0]:.1f}")
    for fork in (False, True):
        wall, cpu = one_mode(fork, starts)
        name = "fork server" if fork else "new interpreter"
        print(
            f"{name:16} wall {wall:.2f} s/start  CPU {cpu:.2f} s/start (fork server's own imports included)"
        )


if __name__ == "__main__":
    main()
