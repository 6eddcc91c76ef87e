"""`deadpixel networks update` against a real HTTP server on loopback that serves the official lists' paths.

The vendors' hosts are replaced by the server through DEADPIXEL_NETWORKS_MIRROR (paths kept), so the run
reads the same URLs' paths as it would on the internet, including Google's ranges under /crawling/ipranges/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deadpixel.enrich.networks import Networks, parse_ip
from deadpixel.enrich.update import GOOGLE_FETCHERS_URLS, parse_google_prefixes, parse_microsoft_endpoints

GOOGLE = "/static/crawling/ipranges/"
FILES: dict[str, tuple[str, bytes]] = {
    "/endpoints/worldwide": (
        "application/json",
        json.dumps([{"id": 10, "ips": ["40.107.0.0/16", "2a01:111:f403::/48"]}]).encode(),
    ),
    "/egress-ip-ranges.csv": (
        "text/csv",
        b"172.224.224.0/27,GB,GB-EN,London,\n172.224.224.32/27,GB,GB-EN,London,\n",
    ),
    GOOGLE + "user-triggered-fetchers.json": (
        "application/json",
        json.dumps({"creationTime": "x", "prefixes": [{"ipv4Prefix": "34.64.6.0/27"}]}).encode(),
    ),
    GOOGLE + "user-triggered-fetchers-google.json": (
        "application/json",
        json.dumps(
            {"prefixes": [{"ipv4Prefix": "66.249.84.0/24"}, {"ipv6Prefix": "2001:4860:4801::/64"}]}
        ).encode(),
    ),
    GOOGLE + "user-triggered-agents.json": (
        "application/json",
        json.dumps({"prefixes": [{"ipv4Prefix": "34.96.162.0/27"}]}).encode(),
    ),
}


class Upstream:
    """Serves FILES; a test changes ``files`` to move or break a source."""

    def __init__(self) -> None:
        self.files = dict(FILES)
        self.requested: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                upstream.requested.append(path)
                found = upstream.files.get(path)
                if found is None:
                    self.send_error(404)
                    return
                kind, body = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def update(tmp_path: Path, upstream: Upstream) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "DEADPIXEL_DATA_DIR": str(tmp_path / "data"),
        "DEADPIXEL_NETWORKS_MIRROR": upstream.url,
    }
    return subprocess.run(
        [sys.executable, "-m", "deadpixel", "networks", "update"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_update_reads_every_source_and_google_in_its_new_place(tmp_path: Path, upstream: Upstream) -> None:
    done = update(tmp_path, upstream)
    assert done.returncode == 0, done.stderr
    assert "google-user-triggered-fetchers.csv: 4 ranges" in done.stdout
    assert sorted(upstream.requested) == sorted(FILES)
    assert [url.split("/static/", 1)[1] for url in GOOGLE_FETCHERS_URLS] == [
        f"crawling/ipranges/{name}"
        for name in (
            "user-triggered-fetchers.json",
            "user-triggered-fetchers-google.json",
            "user-triggered-agents.json",
        )
    ]
    networks = Networks.load(update_dir=tmp_path / "data" / "networks")
    for ip, owner in [
        ("34.96.162.1", "Google user-triggered fetchers"),  # from the new user-triggered-agents.json
        ("66.249.84.9", "Google user-triggered fetchers"),
        ("172.224.224.40", "iCloud Private Relay"),
        ("40.107.3.3", "Microsoft EOP"),
    ]:
        found = networks.match(parse_ip(ip))
        assert found is not None and found.owner == owner, ip


def test_a_moved_or_broken_source_is_named_and_the_others_still_update(
    tmp_path: Path, upstream: Upstream
) -> None:
    assert update(tmp_path, upstream).returncode == 0
    lists = tmp_path / "data" / "networks"
    google_before = (lists / "google-user-triggered-fetchers.csv").read_text()
    microsoft_before = (lists / "microsoft-eop.csv").read_text()

    del upstream.files[GOOGLE + "user-triggered-agents.json"]  # moved: 404
    upstream.files["/endpoints/worldwide"] = ("text/html", b"<html>We have moved</html>")  # not JSON
    upstream.files["/egress-ip-ranges.csv"] = ("text/csv", b"172.224.225.0/27,US,US-CA,Cupertino,\n")
    done = update(tmp_path, upstream)

    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    google = next(line for line in errors if line.startswith("google-user-triggered-fetchers.csv"))
    assert f"{upstream.url}{GOOGLE}user-triggered-agents.json" in google and "HTTP 404" in google
    microsoft = next(line for line in errors if line.startswith("microsoft-eop.csv"))
    assert f"{upstream.url}/endpoints/worldwide" in microsoft and "not JSON" in microsoft
    assert "2 of 3 lists not updated" in done.stderr
    assert "Traceback" not in done.stderr
    assert "apple-private-relay.csv: 1 ranges" in done.stdout
    assert (lists / "google-user-triggered-fetchers.csv").read_text() == google_before
    assert (lists / "microsoft-eop.csv").read_text() == microsoft_before
    assert "172.224.225.0/27" in (lists / "apple-private-relay.csv").read_text()


def test_unexpected_shapes_are_errors_not_empty_lists() -> None:
    with pytest.raises(ValueError, match="no 'prefixes' list"):
        parse_google_prefixes(json.dumps({"ranges": []}))
    with pytest.raises(ValueError, match="not a list of endpoint sets"):
        parse_microsoft_endpoints(json.dumps({"id": 10}))
    with pytest.raises(ValueError, match="not JSON"):
        parse_google_prefixes("<!doctype html>")
