"""The pixel's own HTTP/1.1 protocol (``deadpixel.track.protocol``) and the adapter behind it.

Most tests run the protocol in this process, the way uvicorn tests its own: the real app (real SQLite, its
real group-commit writer) and uvicorn's real ``Config`` and ``ServerState``, with a fake transport that
collects what is written and records pause, resume and close. So framing, ordering, pipelining, the hand-over
to uvicorn, 431, the pending cap and idle close are checked byte for byte, quickly, with no process to start.
Two tests keep a real ``deadpixel serve`` and a raw socket, one for each path a connection can take.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import socket
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deadpixel.config import Settings
from deadpixel.server.app import create_app
from deadpixel.track.adapter import (
    SUPPORTED_UVICORN,
    Config,
    ServerState,
    check_uvicorn,
    is_supported,
    uvicorn_version,
)
from deadpixel.track.bounded import MAX_HEAD
from deadpixel.track.pixel import GIF
from deadpixel.track.protocol import MAX_WAITING, PixelProtocol, may_be_pixel

from .conftest import Server
from .helpers import count_opens, make_pixels

FORGED = "/o/" + "0" * 32 + ".gif"
ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The protocol does not depend on the store: SQLite only."""
    return f"sqlite:///{tmp_path / 'store.db'}"


Answer = tuple[int, dict[str, str], bytes]


def request(method: str, path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: pixels.example", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_answers(stream: bytes, methods: list[str]) -> tuple[list[Answer], bytes]:
    """The complete answers at the start of ``stream`` to requests made with ``methods``, and what is left."""
    answers: list[Answer] = []
    while len(answers) < len(methods):
        end = stream.find(b"\r\n\r\n")
        if end < 0:
            break
        status_line, *header_lines = stream[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
        length = 0 if methods[len(answers)] == "HEAD" else int(headers.get("content-length", "0"))
        if len(stream) < end + 4 + length:
            break
        answers.append((int(status_line.split()[1]), headers, stream[end + 4 : end + 4 + length]))
        stream = stream[end + 4 + length :]
    return answers, stream


def read_answers(sock: socket.socket, methods: list[str], timeout: float = 5.0) -> tuple[list[Answer], bool]:
    """The answers to requests made with ``methods``, in order, and whether the server closed afterwards."""
    sock.settimeout(timeout)
    stream = b""
    closed = False
    while True:
        answers, rest = parse_answers(stream, methods)
        if len(answers) == len(methods):
            sock.settimeout(0.3)  # anything more would be an answer nobody asked for
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            closed = True
            break
        stream += chunk
    answers, rest = parse_answers(stream, methods)
    assert rest == b"", rest
    return answers, closed


def is_gif(answer: Answer, head: bool = False) -> bool:
    status, headers, body = answer
    return status == 200 and headers["content-type"] == "image/gif" and body == (b"" if head else GIF)


def all_pixels(answers: list[Answer], methods: list[str]) -> bool:
    return len(answers) == len(methods) and all(
        is_gif(answer, head=method == "HEAD") for answer, method in zip(answers, methods, strict=True)
    )


# In process


class FakeTransport:
    """A transport that keeps what is written and what the protocol asked of it, as uvicorn's tests do."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.protocol: asyncio.Protocol | None = None
        self.written = b""
        self.closed = False
        self.reading = True
        self.pauses = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            self.loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol | None:
        return self.protocol


class Connection:
    """One client connection to the protocol under test."""

    def __init__(self, served: Served) -> None:
        self.transport = FakeTransport(served.loop)
        self.pixel = PixelProtocol(served.config, served.state, {}, served.loop)
        self.transport.protocol = self.pixel
        self.pixel.connection_made(self.transport)  # type: ignore[arg-type]
        self.read = 0  # bytes of answers taken so far

    def send(self, data: bytes) -> None:
        """Bytes from the client, to whichever protocol holds the connection now (as the event loop does)."""
        assert self.transport.protocol is not None and not self.transport.closed
        self.transport.protocol.data_received(data)

    async def answers(self, methods: list[str], timeout: float = 5.0) -> list[Answer]:
        """The next answers, to requests made with ``methods``; fails on a byte more than they hold."""
        deadline = time.monotonic() + timeout
        while True:
            answers, rest = parse_answers(self.transport.written[self.read :], methods)
            if len(answers) == len(methods) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.005)  # room for an answer nobody asked for
        answers, rest = parse_answers(self.transport.written[self.read :], methods)
        assert len(answers) == len(methods) and rest == b"", (answers, rest)
        self.read = len(self.transport.written)
        return answers


class Served:
    """The real app in this process, with uvicorn's real Config and ServerState, on a loop of its own."""

    def __init__(self, keep_alive: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_app()
        self.config = Config(
            self.app, interface="asgi3", lifespan="off", proxy_headers=False, timeout_keep_alive=keep_alive
        )
        self.state = ServerState()
        self.state.default_headers = [(b"date", b"Sun, 06 Dec 2026 05:00:00 GMT")]
        self._lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._said: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self._task = self.loop.create_task(self.app({"type": "lifespan"}, self._lifespan.get, self._said.put))
        assert self.run(self._say("lifespan.startup")) == "lifespan.startup.complete"

    async def _say(self, message: str) -> str:
        await self._lifespan.put({"type": message})
        return (await self._said.get())["type"]

    def run(self, step: Awaitable[T]) -> T:
        return self.loop.run_until_complete(step)

    def connect(self) -> Connection:
        return Connection(self)

    def close(self) -> None:
        assert self.run(self._say("lifespan.shutdown")) == "lifespan.shutdown.complete"
        self.run(self._task)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


@pytest.fixture
def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setenv("DEADPIXEL_OPEN_CAP", "0")  # every genuine request stored, however many
    s = Served()
    yield s
    s.close()


def scenario(served: Served, steps: Callable[[], Awaitable[None]]) -> None:
    served.run(steps())


def test_pipelined_answers_keep_their_order_when_a_forged_token_needs_no_commit(
    served: Served, settings: Settings
) -> None:
    [(_, first), (_, second)] = make_pixels(settings, 2)

    async def steps() -> None:
        alone = served.connect()
        alone.send(request("GET", FORGED))
        assert is_gif(parse_answers(alone.transport.written, ["GET"])[0][0])  # no commit: answered at once
        conn = served.connect()
        methods = ["GET", "HEAD", "GET", "HEAD"]
        paths = [first, FORGED, second, first]
        conn.send(b"".join(request(method, path) for method, path in zip(methods, paths, strict=True)))
        assert conn.transport.written == b""  # the forged token's GIF waits behind the genuine one's commit
        assert all_pixels(await conn.answers(methods), methods)
        assert not conn.transport.closed

    scenario(served, steps)
    assert count_opens(settings) == 3


def test_a_connection_carries_on_with_uvicorn_after_a_request_that_is_not_a_pixel(
    served: Served, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()
        conn.send(request("GET", path) + request("GET", "/healthz") + request("GET", path))
        assert not conn.transport.reading  # nothing more is read until the pixel before is answered
        assert conn.transport.protocol is conn.pixel
        answers = await conn.answers(["GET", "GET", "GET"])
        assert conn.transport.protocol is not conn.pixel and conn.transport.reading  # uvicorn's now
        conn.send(request("HEAD", path))
        answers += await conn.answers(["HEAD"])
        assert is_gif(answers[0])
        assert answers[1][0] == 200 and answers[1][2] == b"ok\n"
        assert is_gif(answers[2]) and is_gif(answers[3], head=True)  # answered by the ASGI endpoint now
        assert not conn.transport.closed

    scenario(served, steps)
    assert count_opens(settings) == 3


def test_a_pixel_request_with_a_body_is_left_to_uvicorn_and_still_counts(
    served: Served, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()
        conn.send(request("GET", path, "Content-Length: 5") + b"hello" + request("GET", path))
        assert all(is_gif(answer) for answer in await conn.answers(["GET", "GET"]))

    scenario(served, steps)
    assert count_opens(settings) == 2


def test_bytes_that_are_not_http_get_uvicorns_400(served: Served, settings: Settings) -> None:
    async def steps() -> None:
        conn = served.connect()
        conn.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n")
        [(status, _, _)] = await conn.answers(["GET"])
        assert status == 400 and conn.transport.closed

    scenario(served, steps)


def test_a_query_string_does_not_hide_the_token(served: Served, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()
        conn.send(request("GET", path + "?utm_source=x"))
        assert is_gif((await conn.answers(["GET"]))[0])

    scenario(served, steps)
    assert count_opens(settings) == 1


def test_http_1_0_and_connection_close_get_their_answer_then_the_connection_ends(
    served: Served, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()
        conn.send(request("GET", path, version="1.0"))
        [answer] = await conn.answers(["GET"])
        assert is_gif(answer) and answer[1]["connection"] == "close" and conn.transport.closed
        # Whatever follows a request that asked to close is not read.
        conn = served.connect()
        conn.send(request("GET", path, "Connection: close") + request("GET", path))
        [answer] = await conn.answers(["GET"])
        assert is_gif(answer) and conn.transport.closed

    scenario(served, steps)
    assert count_opens(settings) == 2


def test_a_head_too_long_is_refused_with_431_and_nothing_is_recorded(
    served: Served, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()  # the pixel's protocol, after a pixel it answers first
        conn.send(request("GET", path) + f"GET {path} HTTP/1.1\r\nX-Filler: ".encode())
        conn.send(b"a" * (MAX_HEAD + 10))
        [first, refused] = await conn.answers(["GET", "GET"])
        assert is_gif(first) and refused[0] == 431 and conn.transport.closed
        conn = served.connect()  # uvicorn's protocol, bounded, after the hand-over
        conn.send(request("GET", "/healthz") + b"GET /c/abc HTTP/1.1\r\nX-Filler: ")
        for _ in range(MAX_HEAD // 4096 + 1):
            conn.send(b"a" * 4096)
        [healthy, refused] = await conn.answers(["GET", "GET"])
        assert healthy[2] == b"ok\n" and refused[0] == 431 and conn.transport.closed

    scenario(served, steps)
    assert count_opens(settings) == 1


def test_a_connection_stops_reading_with_too_many_answers_waiting(served: Served, settings: Settings) -> None:
    methods = ["GET"] * (MAX_WAITING + 10)
    paths = [path for _, path in make_pixels(settings, len(methods))]  # one each: no open cap applies

    async def steps() -> None:
        conn = served.connect()
        conn.send(b"".join(request(method, path) for method, path in zip(methods, paths, strict=True)))
        assert not conn.transport.reading and conn.transport.written == b""
        assert all_pixels(await conn.answers(methods), methods)
        assert conn.transport.reading and not conn.transport.closed

    scenario(served, steps)
    assert count_opens(settings) == len(methods)


def test_a_client_that_does_not_read_is_not_read_either(served: Served) -> None:
    async def steps() -> None:
        conn = served.connect()
        conn.pixel.pause_writing()  # the transport's write buffer is full
        assert not conn.transport.reading
        conn.pixel.resume_writing()
        assert conn.transport.reading

    scenario(served, steps)


def test_a_graceful_stop_answers_what_waits_then_closes(served: Served, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        conn = served.connect()
        assert conn.pixel in served.state.connections  # so that uvicorn's stop reaches it
        conn.send(request("GET", path))
        conn.pixel.shutdown()
        assert not conn.transport.closed
        assert is_gif((await conn.answers(["GET"]))[0]) and conn.transport.closed
        await asyncio.sleep(0)
        assert conn.pixel not in served.state.connections

    scenario(served, steps)
    assert count_opens(settings) == 1


@pytest.mark.serial
def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    served: Served, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)

    async def steps() -> None:
        busy, idle = served.connect(), served.connect()
        idle.send(request("GET", path))
        assert is_gif((await idle.answers(["GET"]))[0])
        started = time.monotonic()
        while not idle.transport.closed and time.monotonic() - started < 5:
            busy.send(request("HEAD", FORGED))  # a connection that keeps talking stays open
            await asyncio.sleep(0.05)
        # Closed between one and two timeouts (1 s) later.
        assert idle.transport.closed and 0.9 < time.monotonic() - started < 2.5
        assert not busy.transport.closed

    scenario(served, steps)


def test_what_may_start_a_pixel_request() -> None:
    for head in [b"", b"G", b"GET /", b"GET /o", b"HEAD /o/", b"GET /o/abc.gif HTTP/1.1\r\n"]:
        assert may_be_pixel(head), head
    for head in [b"P", b"GET /h", b"GET /healthz", b"HEAD /x", b"\x16\x03\x01", b"get /o/"]:
        assert not may_be_pixel(head), head


@hypothesis_settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_however_the_bytes_are_split_every_pipelined_request_gets_its_answer_in_order(
    served: Served, settings: Settings, data: st.DataObject
) -> None:
    if not hasattr(served, "genuine"):  # one message for every example
        served.genuine = make_pixels(settings, 1)[0][1]  # type: ignore[attr-defined]
    genuine: str = served.genuine  # type: ignore[attr-defined]
    expected: int = getattr(served, "expected", 0)  # opens stored by the examples before
    one = st.tuples(st.sampled_from(["GET", "HEAD"]), st.booleans())  # method, genuine token
    kinds = data.draw(st.lists(one, min_size=1, max_size=8))
    methods = [method for method, _ in kinds]
    payload = b"".join(request(method, genuine if real else FORGED) for method, real in kinds)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(payload) - 1), max_size=12)))
    # Whether the event loop runs (commits land, answers go out) after each piece. Drawn before anything is
    # sent: an example Hypothesis abandons halfway through its draws must leave no opens behind.
    pauses = data.draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))

    async def steps() -> None:
        conn = served.connect()
        for start, end, pause in zip([0, *cuts], [*cuts, len(payload)], pauses, strict=True):
            conn.send(payload[start:end])
            if pause:
                await asyncio.sleep(0)
        assert all_pixels(await conn.answers(methods), methods)
        assert not conn.transport.closed

    scenario(served, steps)
    served.expected = expected + sum(real for _, real in kinds)  # type: ignore[attr-defined]
    # An answer waits for its open's batch to be committed, or spooled should a commit fail: the spool
    # reaches the database a moment later.
    deadline = time.monotonic() + 10
    while (stored := count_opens(settings)) < served.expected and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert stored == served.expected  # type: ignore[attr-defined]


# The uvicorn versions the adapter was tested with


def test_the_installed_uvicorn_is_one_the_protocol_was_tested_with() -> None:
    found, (low, high) = uvicorn_version(), SUPPORTED_UVICORN
    assert is_supported(found), (
        f"uvicorn {found} is installed, but deadpixel.track.adapter.SUPPORTED_UVICORN is >={low},<{high}. "
        "The pixel's protocol uses uvicorn internals (ServerState.connections and default_headers, "
        "HttpToolsProtocol's parser, pipeline, cycle and flow, FlowControl): read uvicorn's changelog for "
        "changes to them, run tests/test_protocol.py and tests/test_bounds.py, and only then widen "
        "SUPPORTED_UVICORN and the pin in pyproject.toml together."
    )
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"uvicorn>={low},<{high}" in pins  # pip installs nothing the tests did not see


def test_only_the_adapter_imports_uvicorns_internals() -> None:
    """Anything from uvicorn beyond ``uvicorn.run`` goes through deadpixel.track.adapter."""
    found = []
    for path in sorted((ROOT / "src" / "deadpixel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.startswith("uvicorn.") or name == "uvicorn" for name in names):
                found.append((path.relative_to(ROOT).as_posix(), names[0]))
    assert sorted(set(found)) == [
        ("src/deadpixel/server/start.py", "uvicorn"),  # uvicorn.run, its public API
        ("src/deadpixel/track/adapter.py", "uvicorn.config"),
        ("src/deadpixel/track/adapter.py", "uvicorn.protocols.http.flow_control"),
        ("src/deadpixel/track/adapter.py", "uvicorn.protocols.http.httptools_impl"),
        ("src/deadpixel/track/adapter.py", "uvicorn.server"),
    ]


def test_an_untested_uvicorn_is_named_in_a_warning_at_server_start(caplog: pytest.LogCaptureFixture) -> None:
    low, high = SUPPORTED_UVICORN
    assert is_supported(low) and is_supported(low + ".7") and not is_supported(high)
    assert not is_supported("0.1.0") and not is_supported("1.0.0") and not is_supported("nonsense")
    with caplog.at_level(logging.WARNING, logger="deadpixel.track.adapter"):
        assert check_uvicorn(low) is None
        assert caplog.records == []
        message = check_uvicorn("9.1.0")
    assert message is not None and "uvicorn 9.1.0" in message and f">={low},<{high}" in message
    assert [record.getMessage() for record in caplog.records] == [message]


# Over a real socket, one test for each path a connection can take


def test_a_real_server_answers_pipelined_pixels_on_its_own_protocol(
    server: Server, settings: Settings
) -> None:
    [(_, first), (_, second)] = make_pixels(settings, 2)
    methods = ["GET", "HEAD", "GET", "HEAD"]
    payload = b"".join(
        request(method, path) for method, path in zip(methods, [first, FORGED, second, first], strict=True)
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(payload)
        answers, closed = read_answers(sock, methods)
    assert all_pixels(answers, methods) and not closed
    assert count_opens(settings) == 3


def test_a_real_server_hands_a_connection_to_uvicorn_and_carries_on(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    payload = request("GET", path) + request("GET", "/healthz") + request("GET", path) + request("HEAD", path)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(payload)
        answers, closed = read_answers(sock, ["GET", "GET", "GET", "HEAD"])
    assert is_gif(answers[0]) and answers[1][2] == b"ok\n"
    assert is_gif(answers[2]) and is_gif(answers[3], head=True) and not closed
    assert count_opens(settings) == 3
