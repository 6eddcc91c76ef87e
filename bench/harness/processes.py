"""Children pinned to a core, each in its own process group, and stopped however a run ends."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.common import BenchError, http_get, log
from harness.cpu import group_members

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


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


def deadpixel_command() -> str:
    beside_python = Path(sys.executable).with_name("deadpixel")
    found = str(beside_python) if beside_python.exists() else shutil.which("deadpixel")
    if found is None:
        raise BenchError("the deadpixel command is not installed (pip install -e '.[bench]')")
    return found


def require_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset", "nginx") if shutil.which(tool) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: apt-get install wrk nginx-light util-linux")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchError("needs two cores: one for the servers, one for the load")
