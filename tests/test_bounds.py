"""Bounded input on every route, attacked as a hostile client would, against a real ``deadpixel serve``:
bodies refused before they are read, forms with bounded fields, request heads bounded whoever parses them,
pipelined requests read no faster than they are answered. Raw sockets, and the server's resident memory
read from /proc.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy import select as sql_select

from deadpixel.api.body import MAX_BODY as MAX_API_BODY
from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.server.app import MAX_BODY, MAX_UNSUBSCRIBE_BODY
from deadpixel.store.api_tokens import create_token
from deadpixel.store.db import create_engine
from deadpixel.store.schema import campaign_recipients, campaigns, suppressions
from deadpixel.track.bounded import MAX_HEAD, MAX_PIPELINED

from .conftest import Server
from .test_protocol import read_answers, request

MiB = 1024 * 1024


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Limits do not depend on the store: SQLite only."""
    return f"sqlite:///{tmp_path / 'store.db'}"


def rss(server: Server) -> int:
    """The server process's resident memory, in bytes."""
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def unsubscribe_path(settings: Settings, address: str = "ann@example.org") -> str:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        made = conn.execute(insert(campaigns).values(name="news", created_at=time.time()))
        conn.execute(
            insert(campaign_recipients).values(
                campaign_id=made.inserted_primary_key[0], address=address, line=1, run_id="r1", status="sent",
                updated_at=time.time(), unsubscribe_id="u" * 16,
            )
        )  # fmt: skip
    engine.dispose()
    return "/u/" + TokenSigner(load_or_create_keys(settings.keys_file)).unsubscribe_token("u" * 16)


def suppressed(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        found = list(conn.execute(sql_select(suppressions.c.address)).scalars())
    engine.dispose()
    return found


def post_head(path: str, *fields: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: t", *fields, "", ""]).encode()


def answer_head(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """The status line and headers of the next answer (the body, if any, left unread)."""
    sock.settimeout(timeout)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except OSError:
        pass
    return got


def stream_until_answered(sock: socket.socket, first: bytes, chunk: bytes, most: int) -> tuple[bytes, int]:
    """Send ``first``, then ``chunk`` after ``chunk`` until the server refuses (413 or 431) or hangs up (or
    ``most`` bytes went out); return all it answered until it closed, and how many bytes of chunks went out
    before the refusal came."""
    sock.sendall(first)
    got, sent = b"", 0
    while sent < most:
        readable, _, _ = select.select([sock], [], [], 0)
        try:
            if readable:
                data = sock.recv(65536)
                got += data
                if not data or b" 413 " in got or b" 431 " in got:
                    break
                continue  # an answer to a request before: go on
            sock.sendall(chunk)
        except OSError:  # the server closed: its answer is read below
            break
        sent += len(chunk)
    return got + read_until_closed(sock), sent


# 1. Bodies


def test_an_oversized_unsubscribe_body_is_refused_before_a_byte_of_it_is_read(
    server: Server, settings: Settings
) -> None:
    path = unsubscribe_path(settings)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {400 * MiB}\r\n\r\n".encode())
        head = answer_head(sock)  # no body was sent: an answer now means none was awaited
        assert status_of(head) == 413 and b"connection: close" in head.lower()
    assert suppressed(settings) == []


def test_a_chunked_body_is_counted_as_it_streams_and_refused_past_the_limit(
    server: Server, settings: Settings
) -> None:
    path = unsubscribe_path(settings)
    piece = b"1000\r\n" + b"x" * 0x1000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        first = f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        head, sent = stream_until_answered(sock, first, piece, 64 * MiB)
    assert status_of(head) == 413, (head, sent)
    assert sent < 16 * MiB  # refused while streaming, not at the end of 64 MiB
    assert suppressed(settings) == []
    # Within the limit, a chunked one-click POST still unsubscribes.
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        body = b"List-Unsubscribe=One-Click"
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        )  # fmt: skip
        assert status_of(answer_head(sock)) == 200
    assert suppressed(settings) == ["ann@example.org"]


def test_every_route_has_its_limit_and_the_api_answers_in_json(server: Server, settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        _, token = create_token(conn, "t")
    engine.dispose()
    cases = [
        ("/api/v1/messages", [f"Authorization: Bearer {token}"], MAX_API_BODY),
        ("/login", [], MAX_BODY),
        ("/healthz", [], MAX_BODY),
        ("/c/whatever", [], MAX_BODY),
        (unsubscribe_path(settings), [], MAX_UNSUBSCRIBE_BODY),
    ]
    for path, extra, limit in cases:
        for length, refused in ((limit + 1, True), (limit, False)):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(post_head(path, *extra, f"Content-Length: {length}"))
                if not refused:
                    sock.sendall(b"x" * length)
                head = answer_head(sock)
            assert (status_of(head) == 413) == refused, (path, length, head)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head("/api/v1/messages", f"Content-Length: {MiB}"))
        head = answer_head(sock)
        body = sock.recv(1000) if head.endswith(b"\r\n\r\n") else head.split(b"\r\n\r\n", 1)[1]
    assert status_of(head) == 413
    assert json.loads(body) == {"error": f"the body is larger than {MAX_API_BODY} bytes"}


# 2. Forms


def multipart(fields: list[tuple[str, bytes]], filename: str | None = None) -> tuple[str, bytes]:
    boundary = "b0undary"
    parts = b""
    for name, value in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", parts + f"--{boundary}--\r\n".encode()


def post(server: Server, path: str, kind: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head(path, f"Content-Type: {kind}", f"Content-Length: {len(body)}") + body)
        return status_of(answer_head(sock))


def test_the_sign_in_form_cannot_be_made_to_hold_memory(server: Server) -> None:
    # The attack as it was made: 300 fields of 1 MiB, unauthenticated. Refused on its Content-Length.
    kind, _ = multipart([])
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(post_head("/login", f"Content-Type: {kind}", f"Content-Length: {300 * (MiB + 60)}"))
        assert status_of(answer_head(sock)) == 413
    # Within the body limit, the form's own bounds: few fields, no files.
    assert post(server, "/login", *multipart([(f"f{i}", b"x") for i in range(100)])) == 400
    assert post(server, "/login", *multipart([("csrf", b"x")], filename="a.bin")) == 400
    assert post(server, "/login", "application/x-www-form-urlencoded", b"&".join([b"a=1"] * 100)) == 400
    fields = [("csrf", b"forged"), ("name", b"a"), ("password", b"b")]
    assert post(server, "/login", *multipart(fields)) == 403  # a form within bounds is read as before


# 3. Request heads


@pytest.mark.serial
def test_a_huge_head_on_any_route_gets_431_quickly_and_costs_no_memory(server: Server) -> None:
    pixel = "/o/" + "0" * 32 + ".gif"  # a forged token: answered at once, so its time is the event loop's
    with socket.create_connection(("127.0.0.1", server.port)) as warm:  # the page's first visit loads code
        warm.sendall(request("GET", "/c/abc"))
        answer_head(warm)
    before = rss(server)
    slowest = 0.0
    with socket.create_connection(("127.0.0.1", server.port)) as pixels:
        for first in (
            b"GET /c/abc HTTP/1.1\r\nX-Filler: ",
            request("GET", "/healthz") + b"GET / HTTP/1.1\r\nX: ",
        ):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                started = time.monotonic()
                head, sent = stream_until_answered(sock, first, b"a" * 65536, 24 * MiB)
                took = time.monotonic() - started
                if first.startswith(b"GET /healthz"):  # the request before the long head is answered first
                    assert status_of(head) == 200 and b"\r\n\r\nok\n" in head, head
                    head = head.split(b"\r\n\r\nok\n", 1)[1]
                assert status_of(head) == 431, (first, head[:100], sent)
                assert sent < 8 * MiB and took < 3, (sent, took)
            started = time.monotonic()
            pixels.sendall(request("GET", pixel))
            read_answers(pixels, ["GET"])
            slowest = max(slowest, time.monotonic() - started)
    assert rss(server) - before < 8 * MiB
    assert slowest < 0.5


def test_a_head_just_under_the_limit_is_served(server: Server) -> None:
    filler = "a" * (MAX_HEAD - 200)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request("GET", "/healthz", f"X-Filler: {filler}") * 3)
        answers, closed = read_answers(sock, ["GET"] * 3)
    assert [status for status, _, _ in answers] == [200, 200, 200] and not closed


# 4. Pipelining


def test_a_pipelined_flood_is_read_no_faster_than_it_is_answered(server: Server) -> None:
    flood = request("GET", "/healthz") * (512 * 1024 // len(request("GET", "/healthz")))
    with socket.create_connection(("127.0.0.1", server.port)) as warm:
        warm.sendall(request("GET", "/healthz"))
        read_answers(warm, ["GET"])
    before = rss(server)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    unsent = [flood] * len(socks)
    grown, deadline = 0, time.monotonic() + 2.5
    try:
        for sock in socks:
            sock.setblocking(False)
        while time.monotonic() < deadline:  # as fast as the server takes it; nobody reads the answers
            for i, sock in enumerate(socks):
                with contextlib.suppress(BlockingIOError):
                    unsent[i] = unsent[i][sock.send(unsent[i]) :] if unsent[i] else b""
            grown = max(grown, rss(server) - before)
            time.sleep(0.02)
    finally:
        for sock in socks:
            sock.close()
    assert grown < 16 * MiB, (grown / MiB, [len(u) for u in unsent])


def test_pipelined_requests_past_the_queue_limit_are_all_answered_in_order(server: Server) -> None:
    paths = ["/healthz", "/readyz", "/nothing-here"] * (MAX_PIPELINED + 40)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(request("GET", path) for path in paths))
        answers, closed = read_answers(sock, ["GET"] * len(paths), timeout=20)
    expected = {"/healthz": (200, b"ok\n"), "/readyz": (200, b"ready\n"), "/nothing-here": (404, None)}
    for path, (status, _, body) in zip(paths, answers, strict=True):
        want_status, want_body = expected[path]
        assert status == want_status and (want_body is None or body == want_body)
    assert not closed
