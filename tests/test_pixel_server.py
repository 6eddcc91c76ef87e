"""The hot path through a real ``deadpixel serve`` on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from deadpixel.config import Settings
from deadpixel.reports import analytics
from deadpixel.store.db import create_engine
from deadpixel.track.pixel import GIF

from .conftest import Server
from .helpers import count_opens, deadpixel, make_pixels

NO_CACHE = "no-store, no-cache, must-revalidate, private, max-age=0"


def recorded(settings: Settings, message_id: str | None = None) -> list[dict[str, object]]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = analytics.list_opens(conn, message_id=message_id, limit=1000)
    engine.dispose()
    return rows


def assert_is_the_pixel(response: httpx.Response, *, head: bool = False) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == NO_CACHE
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["expires"] == "0"
    assert "set-cookie" not in response.headers
    assert response.headers["content-length"] == "43"
    assert response.content == (b"" if head else GIF)


def test_a_pixel_fetch_is_answered_and_recorded(server: Server, settings: Settings) -> None:
    [(mid, path)] = make_pixels(settings, 1)
    response = httpx.get(server.url + path, headers={"user-agent": "Mozilla/5.0 (Test) Thunderbird/128"})
    assert_is_the_pixel(response)
    [row] = recorded(settings, mid)
    assert row["ip"] == "127.0.0.0"  # DEADPIXEL_IP_MODE=truncate by default: the /24, not the host
    assert row["user_agent"] == "Mozilla/5.0 (Test) Thunderbird/128"
    assert row["method"] == "GET"
    assert str(row["at"]).endswith("+00:00")


def test_head_is_answered_and_recorded_with_its_method(server: Server, settings: Settings) -> None:
    [(mid, path)] = make_pixels(settings, 1)
    assert_is_the_pixel(httpx.head(server.url + path), head=True)
    assert [r["method"] for r in recorded(settings, mid)] == ["HEAD"]


def test_a_lower_or_upper_cased_url_still_counts(server: Server, settings: Settings) -> None:
    [(mid, path)] = make_pixels(settings, 1)
    token = path[3:-4]
    assert_is_the_pixel(httpx.get(f"{server.url}/o/{token.upper()}.GIF"))
    assert_is_the_pixel(httpx.get(f"{server.url}/o/{token}"))
    assert len(recorded(settings, mid)) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/o/",
        "/o/.gif",
        "/o/garbage.gif",
        "/o/" + "0" * 32 + ".gif",
        "/o/" + "z" * 32 + ".gif",
        "/o/" + "a" * 5000 + ".gif",
        "/o/%00%ff%fe.gif",
        "/o/..%2F..%2Fetc%2Fpasswd",
        "/o/%E2%82%AC" * 10,
    ],
)
def test_forged_or_garbled_tokens_get_the_gif_and_record_nothing(
    server: Server, settings: Settings, path: str
) -> None:
    assert_is_the_pixel(httpx.get(server.url + path))
    assert count_opens(settings) == 0


def test_a_tampered_token_gets_the_gif_and_records_nothing(server: Server, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)
    flipped = path[:10] + ("1" if path[10] != "1" else "2") + path[11:]
    assert_is_the_pixel(httpx.get(server.url + flipped))
    assert count_opens(settings) == 0


def test_other_methods_on_the_pixel_are_refused_cleanly(server: Server, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)
    response = httpx.post(server.url + path, content=b"x")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert count_opens(settings) == 0


def test_raw_malformed_requests_never_get_a_5xx(shared_server: Server) -> None:
    server = shared_server
    port = server.port
    for raw in [
        b"GET /o/\xff\xfe.gif HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /o/abc.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: \xc3\x28\x00bad\r\n\r\n",
        b"GET /o/abc.gif HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"A" * 6000 + b"\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n",
    ]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(raw)
            reply = sock.recv(200)
        assert not reply.startswith(b"HTTP/1.1 5"), (raw[:40], reply)
    assert httpx.get(server.url + "/healthz").status_code == 200


def raw_get(port: int, path: str, user_agent: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
            + b"User-Agent: "
            + user_agent
            + b"\r\n\r\n"
        )
        return sock.recv(100)


def test_a_user_agent_with_invalid_utf8_is_stored_safely(server: Server, settings: Settings) -> None:
    [(mid, path)] = make_pixels(settings, 1)
    assert raw_get(server.port, path, b"Mail\xff\xfeClient").startswith(b"HTTP/1.1 200")
    [row] = recorded(settings, mid)
    assert row["user_agent"] == "Mail\ufffd\ufffdClient"


def test_a_nul_in_a_header_is_a_bad_request_not_a_crash(server: Server, settings: Settings) -> None:
    [(_, path)] = make_pixels(settings, 1)
    assert raw_get(server.port, path, b"Mail\x00Client").startswith(b"HTTP/1.1 400")
    assert count_opens(settings) == 0
    assert httpx.get(server.url + path).status_code == 200


def test_health_and_readiness(shared_server: Server) -> None:
    server = shared_server
    assert httpx.get(server.url + "/healthz").text == "ok\n"
    assert httpx.get(server.url + "/readyz").text == "ready\n"


def test_forwarded_addresses_count_only_from_trusted_proxies(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    (a, path_a), (b, path_b) = make_pixels(settings, 2)
    plain = server_factory(env=dict(env)).start()
    httpx.get(plain.url + path_a, headers={"x-forwarded-for": "198.51.100.23"})
    trusting = server_factory(env={**env, "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1/32"}).start()
    httpx.get(trusting.url + path_b, headers={"x-forwarded-for": "6.6.6.6, 198.51.100.23"})
    assert recorded(settings, a)[0]["ip"] == "127.0.0.0"
    assert recorded(settings, b)[0]["ip"] == "198.51.100.0"


@pytest.mark.parametrize(("mode", "stored"), [("full", "198.51.100.23"), ("none", None)])
def test_ip_mode_decides_what_is_kept_of_the_address_after_enrichment(
    server_factory: type[Server], env: dict[str, str], settings: Settings, mode: str, stored: str | None
) -> None:
    [(mid, path)] = make_pixels(settings, 1)
    server = server_factory(
        env={**env, "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1", "DEADPIXEL_IP_MODE": mode}
    ).start()
    agent = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0"
    )
    httpx.get(
        server.url + path,
        headers={"x-forwarded-for": "8.8.8.8" if mode == "none" else "198.51.100.23", "user-agent": agent},
    )
    [row] = recorded(settings, mid)
    assert row["ip"] == stored
    if mode == "none":
        assert row["country"] == "US"  # derived at ingest from the address that was then dropped


def test_pixels_keep_working_across_a_secret_rotation_without_restart(
    server: Server, settings: Settings, env: dict[str, str]
) -> None:
    [(old_id, old_path)] = make_pixels(settings, 1)
    deadpixel("secret", "rotate", check=True)
    [(new_id, new_path)] = make_pixels(settings, 1)
    assert new_path[3:5] != old_path[3:5]  # signed with the new key id
    httpx.get(server.url + old_path)
    httpx.get(server.url + new_path)
    assert len(recorded(settings, old_id)) == 1
    assert len(recorded(settings, new_id)) == 1


@pytest.mark.slow
def test_invalid_tokens_and_recorded_opens_are_counted_in_metrics(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    server = server_factory(env=dict(env), workers=2).start()
    pixels = make_pixels(settings, 3)
    for _, path in pixels:
        assert httpx.get(server.url + path).status_code == 200
    for bad in ["/o/nope.gif", "/o/" + "1" * 32 + ".gif"]:
        assert httpx.get(server.url + bad).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        result = deadpixel("metrics", "--json", check=True)
        figures = json.loads(result.stdout)
        if figures.get("pixel_requests_total") == 5 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert figures["processes"] == 2
    assert figures["pixel_requests_total"] == 5
    assert figures["invalid_tokens_total"] == 2
    assert figures["opens_recorded_total"] == 3
    server.stop()
    gone = json.loads(deadpixel("metrics", "--json", check=True).stdout)
    assert gone == {"processes": 0}


@pytest.mark.slow
def test_prometheus_metrics_on_their_own_port_only(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    from .conftest import free_port

    metrics_port = free_port()
    server = server_factory(env=env | {"DEADPIXEL_METRICS_PORT": str(metrics_port)}, workers=2).start()
    for _, path in make_pixels(settings, 3):
        assert httpx.get(server.url + path).status_code == 200
    assert httpx.get(server.url + "/o/forged.gif").status_code == 200
    deadline = time.monotonic() + 10
    while True:
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        samples = {
            line.split()[0]: float(line.split()[1])
            for line in scrape.text.splitlines()
            if line and not line.startswith("#")
        }
        if samples.get("deadpixel_pixel_requests_total") == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert samples["deadpixel_processes"] == 2
    assert samples["deadpixel_pixel_requests_total"] == 4
    assert samples["deadpixel_invalid_tokens_total"] == 1
    assert samples["deadpixel_opens_recorded_total"] == 3
    assert "# TYPE deadpixel_opens_recorded_total counter" in scrape.text
    assert "# TYPE deadpixel_queue_depth gauge" in scrape.text
    assert httpx.get(server.url + "/metrics").status_code == 404  # not on the public port
    assert httpx.get(f"http://127.0.0.1:{metrics_port}/other").status_code == 404
    printed = deadpixel("metrics", "--prometheus", check=True).stdout
    assert "deadpixel_pixel_requests_total 4" in printed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_logs_are_json_lines_when_asked(server_factory: type[Server], env: dict[str, str]) -> None:
    server = server_factory(env=env | {"DEADPIXEL_LOG_FORMAT": "json"}).start()
    assert server.stop() == 0
    assert server.process is not None and server.process.stderr is not None
    ours = [
        json.loads(line)
        for line in server.process.stderr.read().decode().splitlines()
        if line.startswith("{") and '"logger": "deadpixel' in line
    ]
    assert [entry["message"] for entry in ours] == ["worker ready on SQLite"]
    assert ours[0]["level"] == "info" and ours[0]["time"].endswith("+00:00") and ours[0]["pid"] > 0
