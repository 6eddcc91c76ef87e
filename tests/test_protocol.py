"""The pixel's own HTTP/1.1 protocol (``deadpixel.track.protocol``) through a real ``deadpixel serve``:
framing, pipelining, hand-over to uvicorn, closing. Raw sockets, so the bytes on the wire are what is checked.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deadpixel.config import Settings
from deadpixel.track.bounded import MAX_HEAD
from deadpixel.track.pixel import GIF
from deadpixel.track.protocol import may_be_pixel

from .conftest import Server
from .helpers import count_opens, make_pixels

FORGED = "/o/" + "0" * 32 + ".gif"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The protocol does not depend on the store: SQLite only."""
    return f"sqlite:///{tmp_path / 'store.db'}"


Answer = tuple[int, dict[str, str], bytes]


def request(method: str, path: str, *extra: str, version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: pixels.example", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_answers(sock: socket.socket, methods: list[str], timeout: float = 5.0) -> tuple[list[Answer], bool]:
    """The answers to requests made with ``methods``, in order, and whether the server closed afterwards."""
    sock.settimeout(timeout)
    stream = b""
    answers: list[Answer] = []
    closed = False
    while True:
        end = stream.find(b"\r\n\r\n")
        if end >= 0 and len(answers) < len(methods):
            status_line, *header_lines = stream[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
            length = 0 if methods[len(answers)] == "HEAD" else int(headers.get("content-length", "0"))
            if len(stream) >= end + 4 + length:
                answers.append((int(status_line.split()[1]), headers, stream[end + 4 : end + 4 + length]))
                stream = stream[end + 4 + length :]
                continue
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
    assert stream == b"", stream
    return answers, closed


def exchange(port: int, payload: bytes, methods: list[str]) -> tuple[list[Answer], bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return read_answers(sock, methods)


def is_gif(answer: Answer, head: bool = False) -> bool:
    status, headers, body = answer
    return status == 200 and headers["content-type"] == "image/gif" and body == (b"" if head else GIF)


def all_pixels(answers: list[Answer], methods: list[str]) -> bool:
    return len(answers) == len(methods) and all(
        is_gif(answer, head=method == "HEAD") for answer, method in zip(answers, methods, strict=True)
    )


def test_pipelined_answers_keep_their_order_when_a_forged_token_needs_no_commit(
    server: Server, settings: Settings
) -> None:
    [(_, first), (_, second)] = make_pixels(settings, 2)
    methods = ["GET", "HEAD", "GET", "HEAD"]
    payload = b"".join(
        request(method, path) for method, path in zip(methods, [first, FORGED, second, first], strict=True)
    )
    answers, closed = exchange(server.port, payload, methods)
    assert all_pixels(answers, methods)
    assert not closed
    assert count_opens(settings) == 3


def test_a_connection_carries_on_with_uvicorn_after_a_request_that_is_not_a_pixel(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    payload = request("GET", path) + request("GET", "/healthz") + request("GET", path) + request("HEAD", path)
    answers, closed = exchange(server.port, payload, ["GET", "GET", "GET", "HEAD"])
    assert is_gif(answers[0])
    assert answers[1][0] == 200 and answers[1][2] == b"ok\n"
    assert is_gif(answers[2]) and is_gif(answers[3], head=True)  # answered by the ASGI endpoint now
    assert not closed
    assert count_opens(settings) == 3


def test_a_pixel_request_with_a_body_is_left_to_uvicorn_and_still_counts(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    payload = request("GET", path, "Content-Length: 5") + b"hello" + request("GET", path)
    answers, _ = exchange(server.port, payload, ["GET", "GET"])
    assert all(is_gif(answer) for answer in answers)
    assert count_opens(settings) == 2


def test_a_query_string_does_not_hide_the_token(server: Server, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)
    answers, _ = exchange(server.port, request("GET", path + "?utm_source=x"), ["GET"])
    assert is_gif(answers[0])
    assert count_opens(settings) == 1


def test_http_1_0_and_connection_close_get_their_answer_then_the_connection_ends(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    answers, closed = exchange(server.port, request("GET", path, version="1.0"), ["GET"])
    assert is_gif(answers[0]) and answers[0][1]["connection"] == "close" and closed
    # Whatever follows a request that asked to close is not read.
    payload = request("GET", path, "Connection: close") + request("GET", path)
    answers, closed = exchange(server.port, payload, ["GET"])
    assert is_gif(answers[0]) and closed
    assert count_opens(settings) == 2


def test_a_head_too_long_is_refused_with_431_and_nothing_is_recorded(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nX-Filler: ".encode() + b"a" * (MAX_HEAD + 10))
        answers, closed = read_answers(sock, ["GET"])
    assert answers[0][0] == 431 and closed
    assert count_opens(settings) == 0


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    server: Server, settings: Settings
) -> None:
    [(_, path)] = make_pixels(settings, 1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request("GET", path))
        assert is_gif(read_answers(sock, ["GET"])[0][0])
        started = time.monotonic()
        sock.settimeout(15)
        assert sock.recv(1) == b""  # closed by the server, between one and two timeouts (5 s) later
        assert 4 < time.monotonic() - started < 12


def test_what_may_start_a_pixel_request() -> None:
    for head in [b"", b"G", b"GET /", b"GET /o", b"HEAD /o/", b"GET /o/abc.gif HTTP/1.1\r\n"]:
        assert may_be_pixel(head), head
    for head in [b"P", b"GET /h", b"GET /healthz", b"HEAD /x", b"\x16\x03\x01", b"get /o/"]:
        assert not may_be_pixel(head), head


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_however_the_bytes_are_split_every_pipelined_request_gets_its_answer_in_order(
    server: Server, settings: Settings, data: st.DataObject
) -> None:
    [(_, genuine)] = make_pixels(settings, 1)
    one = st.tuples(st.sampled_from(["GET", "HEAD"]), st.booleans())  # method, genuine token
    kinds = data.draw(st.lists(one, min_size=1, max_size=6))
    methods = [method for method, _ in kinds]
    payload = b"".join(request(method, genuine if real else FORGED) for method, real in kinds)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(payload) - 1), max_size=8)))
    before = count_opens(settings)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
            sock.sendall(payload[start:end])
            time.sleep(0.001)
        answers, closed = read_answers(sock, methods)
    assert all_pixels(answers, methods)
    assert not closed
    assert count_opens(settings) - before == sum(real for _, real in kinds)
