"""Hostile input on every door: raw HTTP garbage, injection and traversal attempts, secrets in logs."""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as budget
from hypothesis import strategies as st
from sqlalchemy import func, select

from deadpixel.config import Settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.store.db import create_engine
from deadpixel.store.schema import messages, opens

from .conftest import Server
from .helpers import count_opens, deadpixel, make_pixels

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw`` and read the start of the answer; a server that hangs up early has answered nothing."""
    reply = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            while len(reply) < 64:
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
        except (ConnectionError, TimeoutError, OSError):
            pass
    return reply


_token = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF), max_size=60)
_requests = st.one_of(
    st.binary(max_size=300),  # anything at all
    st.builds(  # almost HTTP: odd methods, paths, versions and headers
        lambda method, path, version, headers: (
            method + b" " + path + b" " + version + b"\r\n" + b"".join(headers) + b"\r\n"
        ),
        st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"G\x00T", b"", b"PROPFIND"]),
        st.one_of(
            st.builds(lambda t: b"/o/" + t.encode("utf-8", "surrogatepass") + b".gif", _token),
            st.builds(lambda t: b"/c/" + t.encode("utf-8", "surrogatepass"), _token),
            st.binary(max_size=80),
        ),
        st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"", b"HTTP/1.1 extra"]),
        st.lists(
            st.builds(
                lambda name, value: name + b": " + value + b"\r\n",
                st.binary(max_size=20),
                st.binary(max_size=200),
            ),
            max_size=6,
        ),
    ),
)


@SQLITE_ONLY
def test_no_byte_sequence_gets_a_5xx_or_stops_the_server(server: Server, settings: Settings) -> None:
    @budget(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=_requests)
    def check(raw: bytes) -> None:
        reply = exchange(server.port, raw)
        assert not reply.startswith(b"HTTP/1.1 5"), (raw[:80], reply)

    check()
    huge = [
        b"GET /o/" + b"a" * 100_000 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /o/x.gif HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 2000 + b"\r\n",
        b"GET /o/x.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"\xff" * 70_000 + b"\r\n\r\n",
    ]
    for raw in huge:
        assert not exchange(server.port, raw).startswith(b"HTTP/1.1 5")
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert count_opens(settings) == 0  # nothing forged or garbled was recorded


INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE opens;--", '" OR ""="', "../../../etc/passwd", "%00", "\\x00"]


@SQLITE_ONLY
def test_injection_and_traversal_attempts_fail_harmlessly_over_http(
    server: Server, settings: Settings
) -> None:
    make_pixels(settings, 3)
    for attempt in INJECTIONS:
        for prefix in ("/o/", "/c/", "/u/", "/static/", "/"):
            path = prefix + attempt.replace("/", "%2F")
            response = httpx.get(server.url + path)
            assert response.status_code < 500, (path, response.status_code)
            assert "root:" not in response.text
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(opens)).scalar_one() == 0
    engine.dispose()


@SQLITE_ONLY
def test_injection_attempts_through_the_cli_are_plain_strings(settings: Settings) -> None:
    make_pixels(settings, 2, campaign="real")

    run = deadpixel

    for attempt in INJECTIONS:
        listed = run("opens", "--message", attempt, "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
        unknown = run("opens", "--campaign", attempt, "--json")
        assert unknown.returncode == 1 and "no campaign named" in unknown.stderr
        reported = run("report", attempt, "--json")
        assert reported.returncode == 1 and "no campaign named" in reported.stderr
        forgotten = run("forget", attempt, "--yes")
        assert "Traceback" not in forgotten.stderr
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 2
    engine.dispose()


@SQLITE_ONLY
def test_signing_keys_never_reach_the_logs(server: Server, settings: Settings) -> None:
    for _, path in make_pixels(settings, 3):
        httpx.get(server.url + path)
    httpx.get(server.url + "/o/" + "v" * 32 + ".gif")  # an unknown key id: the key file is re-read
    assert server.stop() == 0
    assert server.process is not None and server.process.stderr is not None
    log = server.process.stderr.read()
    for key in load_or_create_keys(settings.keys_file).keys.values():
        for form in (key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key)):
            assert form not in log
