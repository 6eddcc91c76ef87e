"""The container's HEALTHCHECK command, run as the image runs it: a process against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deadpixel.healthcheck import healthz_url
from tests.conftest import Server, free_port


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deadpixel.healthcheck"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_it_passes_while_the_server_answers_and_fails_in_one_line_after(tmp_path: Path) -> None:
    server = Server(env={"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_HOST": "0.0.0.0"})
    server.start()
    # An HTTP proxy in the environment must not carry a check of this machine's own server.
    env = {
        "DEADPIXEL_DATA_DIR": str(tmp_path),
        "DEADPIXEL_HOST": "0.0.0.0",
        "DEADPIXEL_PORT": str(server.port),
        "http_proxy": f"http://127.0.0.1:{free_port()}",
    }
    try:
        assert _healthcheck(env).returncode == 0
    finally:
        assert server.stop() == 0
    result = _healthcheck(env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"unhealthy: http://127.0.0.1:{server.port}/healthz: ")


def test_a_bad_setting_is_unhealthy_in_one_line(tmp_path: Path) -> None:
    result = _healthcheck({"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_PORT": "x"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "unhealthy: bad setting: DEADPIXEL_PORT: must be a whole number (got 'x')"
    ]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000/healthz"),
        ("::", "http://[::1]:8000/healthz"),
        ("10.0.0.5", "http://10.0.0.5:8000/healthz"),
        ("fd00::5", "http://[fd00::5]:8000/healthz"),
    ],
)
def test_it_asks_the_address_the_server_listens_on(host: str, url: str) -> None:
    assert healthz_url(host, 8000) == url
