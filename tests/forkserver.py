"""A fork server for the tests' ``deadpixel`` processes: one process that has imported the stack once forks a
fresh child per start, instead of a new interpreter importing it all again (about a second of CPU each).

The child is still a real, separate process, started the way ``python -m deadpixel ARGS`` starts: its own
session (``start_new_session``), its own environment, working directory, umask and standard streams, the
same entry point (``deadpixel/__main__.py`` run as ``__main__``), the same exit status and signals. Only the
imports are done beforehand. ``spawn()`` returns a ``ForkedProcess``, which answers what tests ask of a
``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``stderr``, signals).

The parent side (``spawn``) runs in the pytest process; the fork server is this file run as a script. It
has no threads (it must not: a fork copies only the calling thread), and it is the parent of every child,
so it reaps them and tells the test each exit status over a socket of the child's own.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

# DEADPIXEL_TEST_FORK_SERVER=0 starts each process as a new interpreter instead, to compare or to rule the
# fork server out when a test of a process fails.
ENABLED = os.environ.get("DEADPIXEL_TEST_FORK_SERVER", "1") != "0"
# What ``deadpixel serve`` imports before it answers: the command line, the server and the app it serves.
PRELOAD = (
    "deadpixel.cli",
    "deadpixel.cli.context",
    "deadpixel.cli.serve",
    "deadpixel.server.start",
    "deadpixel.server.app",
    "deadpixel.track.protocol",
    "deadpixel.track.adapter",
    "uvicorn",
    "uvicorn.main",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.lifespan.on",
    "uvicorn.supervisors",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.loops.uvloop",
    "uvloop",
    "sniffio",
    "ua_parser_builtins.lazy",
    "maxminddb",
    "deadpixel.send.smtp_config",
    "deadpixel.relay.server",
    "encodings.idna",
)
# Work every server start repeats that depends on nothing of a test's settings, done once before the forks:
# compiling the user-agent parser's expressions (about 0.19 s of CPU) and the shared TLS context for outgoing
# HTTPS (loading the CA bundle; a child whose SSL_CERT_FILE or SSL_CERT_DIR differs makes its own).
WARM_UP = ("deadpixel.enrich.useragent:warm_up", "deadpixel.hooks.tls:client_context")
_MAX_FDS = 4  # status socket, stdin, stdout, stderr
_MESSAGE = 1 << 20


# -- the fork server (this file run as a script) ----------------------------------------------------------


def _serve(control: socket.socket) -> Callable[[], None]:
    """Fork a child for each request until the test process goes away; return (in the child only) what the
    child is to run."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):  # an optional part this install lacks: so does the child
            __import__(name)
    for target in WARM_UP:
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)()
    children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, status socket)
    control.sendall(b"ready\n")
    while True:
        readable, _, _ = select.select([control, *children], [], [])
        for fd in readable:
            if fd in children:
                pid, status = children.pop(fd)
                os.close(fd)
                _, code = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # the test went away first
                    status.sendall(f"exit {code}\n".encode())
                status.close()
        if control not in readable:
            continue
        message, fds, _, _ = socket.recv_fds(control, _MESSAGE, _MAX_FDS)
        if not message:
            os._exit(0)  # the test process ended
        request = json.loads(message)
        status_fd, *stdio = fds
        status = socket.socket(fileno=status_fd)
        sys.stdout.flush()
        sys.stderr.flush()
        assert threading.active_count() == 1, "the fork server must have no threads"
        pid = os.fork()
        if pid == 0:
            control.close()
            for pidfd, (_, other) in children.items():
                os.close(pidfd)
                other.close()
            status.close()
            return _child(request, stdio)
        for fd in stdio:
            os.close(fd)
        children[os.pidfd_open(pid)] = (pid, status)
        status.sendall(f"pid {pid}\n".encode())


def _child(request: dict[str, Any], stdio: list[int]) -> Callable[[], None]:
    """Become the process ``subprocess.Popen([python, "-m", "deadpixel", *args], start_new_session=True)``
    would have started."""
    os.setsid()
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
        os.close(fd)
    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # what ``python -m`` puts first
    sys.argv = ["deadpixel", *request["args"]]

    def run() -> None:
        import runpy

        runpy.run_module("deadpixel", run_name="__main__", alter_sys=True)

    return run


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    # The child's code runs here, outside every frame of the loop, so that its exit (a return, SystemExit, an
    # exception) ends the process as it ends ``python -m deadpixel``: atexit handlers run, streams flushed.
    _serve(control)()


# -- the test's side --------------------------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, seen from the test: the parts of ``subprocess.Popen`` tests use."""

    def __init__(
        self, args: list[str], status: socket.socket, stdout: IO[bytes] | None, stderr: IO[bytes] | None
    ) -> None:
        self.args = args
        self.stdin: IO[bytes] | None = None
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._status = status
        self._buffer = b""
        line = self._line(timeout=30)
        if line is None or not line.startswith(b"pid "):
            raise RuntimeError(f"the fork server did not start {args}")
        self.pid = int(line.split()[1])

    def _line(self, timeout: float | None) -> bytes | None:
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if not ready:
                return None
            chunk = self._status.recv(4096)
            if not chunk:
                raise RuntimeError("the fork server went away")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def poll(self) -> int | None:
        return self.wait(0) if self.returncode is None and self._ready(0) else self.returncode

    def _ready(self, timeout: float | None) -> bool:
        return b"\n" in self._buffer or bool(select.select([self._status], [], [], timeout)[0])

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            line = self._line(timeout)
            if line is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self.returncode = os.waitstatus_to_exitcode(int(line.split()[1]))
            self._status.close()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[bytes, bytes]:
        """Read both pipes to their end, then wait, as ``Popen.communicate`` does (a stream that is not a
        pipe reads as empty); the child is left running if it outlasts the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pipes = [pipe for pipe in (self.stdout, self.stderr) if pipe is not None]
        read: dict[int, bytes] = {pipe.fileno(): b"" for pipe in pipes}
        while pipes:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(pipes, [], [], left)
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            for pipe in ready:
                chunk = os.read(pipe.fileno(), 65536)
                read[pipe.fileno()] += chunk
                if not chunk:
                    pipes.remove(pipe)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = read.get(self.stdout.fileno(), b"") if self.stdout is not None else b""
        err = read.get(self.stderr.fileno(), b"") if self.stderr is not None else b""
        for pipe in (self.stdout, self.stderr):
            if pipe is not None:
                pipe.close()
        return out, err

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _ForkServer:
    """This test process's fork server, started on first use and ended with the process."""

    def __init__(self) -> None:
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _started(self) -> socket.socket:
        if self._control is None or (self._process is not None and self._process.poll() is not None):
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._process = subprocess.Popen(
                [sys.executable, __file__, str(theirs.fileno())],
                # Started from whichever test first needs it: none of that test's settings (each child gets
                # its own environment whole).
                env={k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")},
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            theirs.close()
            ours.settimeout(60)
            if ours.recv(64) != b"ready\n":
                raise RuntimeError("the fork server did not start")
            ours.settimeout(None)
            self._control = ours
            atexit.register(self.close)
        return self._control

    def close(self) -> None:
        """End the fork server and reap it, so that the CPU it and its children used counts for this
        process too (``time pytest`` sees it)."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def spawn(
        self, args: Sequence[str], env: Mapping[str, str], stdout: int | None, stderr: int | None
    ) -> ForkedProcess:
        ours, theirs = socket.socketpair()
        stdin_fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else 0
        opened: list[int] = []
        read_ends: list[IO[bytes] | None] = []
        fds = [theirs.fileno(), stdin_fd]
        for choice, default in ((stdout, 1), (stderr, 2)):
            read_end: IO[bytes] | None = None
            if choice is None:
                fds.append(default)
            elif choice == subprocess.DEVNULL:
                opened.append(os.open(os.devnull, os.O_WRONLY))
                fds.append(opened[-1])
            elif choice == subprocess.PIPE:
                r, w = os.pipe()
                read_end = os.fdopen(r, "rb")
                opened.append(w)
                fds.append(w)
            else:
                raise ValueError(f"unsupported stream {choice}")
            read_ends.append(read_end)
        umask = os.umask(0o022)
        os.umask(umask)
        request = {"args": list(args), "env": dict(env), "cwd": os.getcwd(), "umask": umask}
        try:
            with self._lock:
                socket.send_fds(self._started(), [json.dumps(request).encode()], fds)
        finally:
            theirs.close()
            for fd in opened:
                os.close(fd)
        return ForkedProcess([sys.executable, "-m", "deadpixel", *args], ours, *read_ends)


_server = _ForkServer()


def spawn(
    args: Sequence[str], env: Mapping[str, str], *, stdout: int | None = None, stderr: int | None = None
) -> ForkedProcess | subprocess.Popen[bytes]:
    """Start ``python -m deadpixel ARGS`` in a new session, as a child of the fork server (with
    ``DEADPIXEL_TEST_FORK_SERVER=0``, as a new interpreter). ``stdout`` and ``stderr`` take None (this
    process's), ``subprocess.DEVNULL`` or ``subprocess.PIPE``."""
    if not ENABLED:
        command = [sys.executable, "-m", "deadpixel", *args]
        return subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, start_new_session=True)
    return _server.spawn(args, env, stdout, stderr)


def run(args: Sequence[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "deadpixel", *args], env=env, capture_output=True, text=True)``, the
    process forked from the fork server."""
    process = spawn(args, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        raise
    return subprocess.CompletedProcess(process.args, process.wait(), out.decode(), err.decode())


if __name__ == "__main__":
    main()
