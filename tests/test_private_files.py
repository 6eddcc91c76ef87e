"""A data dir that came back readable by others (restored, copied, made by hand under a 0022 umask) is made
owner-only again by the next command that opens the store, and by ``serve``; doctor then agrees.

Real files, real ``deadpixel`` subprocesses: the attack is another local user reading the files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from deadpixel.security.keys import load_or_create_keys

from . import forkserver
from .conftest import PG_ENV, Server, free_port

SECRETS = ("signing-keys.json", "session-secret", "setup-token", "relay-tls.pem", "deadpixel.toml")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Forked from the fork server: a process of its own with the umask and environment given, as a
    # new interpreter would be (tests/forkserver.py).
    return forkserver.run(args, env, timeout=60)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("DEADPIXEL_")}
    env.pop(PG_ENV, None)
    return env | {"DEADPIXEL_DATA_DIR": str(tmp_path / "data")}


def _loosened_data_dir(env: dict[str, str], secrets: tuple[str, ...] = SECRETS) -> Path:
    """A working data dir (store, keys) whose files and directories others can read, as ``cp -r`` leaves."""
    created = _run(env, "report")
    assert created.returncode == 0, created.stderr
    data = Path(env["DEADPIXEL_DATA_DIR"])
    load_or_create_keys(data / "signing-keys.json")
    for name in secrets:
        path = data / name
        if not path.exists():
            path.write_text("# secret\n" if name == "deadpixel.toml" else "secret\n")
    for name in ("deadpixel.db-wal", "deadpixel.db-shm"):
        (data / name).touch()
    refused = data / "spool" / "opens" / "refused"
    refused.mkdir(parents=True)
    (data / "spool" / "opens" / "1-1-0-1.batch").write_text("[]")
    (data / "spool" / "opens" / "refused" / "2-1-0-1.batch").write_text("[]")
    (data / "notes.txt").write_text("the operator's own file")
    for path in [data, *data.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return data


def _private_paths(data: Path) -> list[Path]:
    return [
        *(data / name for name in SECRETS),
        *(data / f"deadpixel.db{suffix}" for suffix in ("", "-wal", "-shm")),
        data / "spool" / "opens" / "1-1-0-1.batch",
        data / "spool" / "opens" / "refused" / "2-1-0-1.batch",
    ]


def _assert_private(data: Path, stderr: str) -> None:
    for directory in (data, data / "spool", data / "spool" / "opens", data / "spool" / "opens" / "refused"):
        assert _mode(directory) == 0o700, directory
    for path in _private_paths(data):
        if path.exists():  # SQLite removes an empty -wal and -shm once the last connection closes
            assert _mode(path) == 0o600, path
    assert _mode(data / "notes.txt") == 0o644  # not deadpixel's: left as its owner made it
    # One line per file, naming it and the modes.
    assert f"made {data} private: mode 0755 -> 0700" in stderr
    assert f"made {data / 'signing-keys.json'} private: mode 0644 -> 0600" in stderr
    assert f"made {data / 'deadpixel.db'} private: mode 0644 -> 0600" in stderr
    assert f"made {data / 'spool' / 'opens' / 'refused' / '2-1-0-1.batch'} private" in stderr
    assert stderr.count(f"made {data / 'deadpixel.db'} private") == 1


def _doctor_permissions(env: dict[str, str]) -> dict[str, str]:
    doctor = _run(env, "doctor", "--json", "--timeout", "0.2")
    checks = {check["name"]: check for check in json.loads(doctor.stdout)["checks"]}
    return checks["permissions"]  # type: ignore[no-any-return]


def test_a_command_that_opens_the_store_makes_a_loose_data_dir_private(clean_env: dict[str, str]) -> None:
    data = _loosened_data_dir(clean_env)
    assert _doctor_permissions(clean_env)["status"] == "fail"  # the attack: all of it readable by others

    report = _run(clean_env, "report")

    assert report.returncode == 0, report.stderr
    _assert_private(data, report.stderr)
    assert _doctor_permissions(clean_env)["status"] == "ok"
    again = _run(clean_env, "report")  # nothing left to tighten: nothing said
    assert "private" not in again.stderr


def test_serve_makes_a_loose_data_dir_private(clean_env: dict[str, str]) -> None:
    data = _loosened_data_dir(clean_env)
    server = Server(env=clean_env | {"DEADPIXEL_WORKERS": "1"})
    server.start()
    try:
        assert server.stop() == 0
    finally:
        server.kill()
    assert server.process is not None and server.process.stderr is not None
    _assert_private(data, server.process.stderr.read().decode())
    assert _doctor_permissions(clean_env)["status"] == "ok"


def test_a_database_outside_the_data_dir_is_made_private_and_nothing_beside_it(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    env = clean_env | {"DEADPIXEL_DATABASE_URL": f"sqlite:///{elsewhere / 'store.db'}"}
    assert _run(env, "report").returncode == 0
    (elsewhere / "store.db-wal").touch()
    (elsewhere / "other.txt").write_text("not deadpixel's")
    for path in elsewhere.iterdir():
        path.chmod(0o644)

    report = _run(env, "opens")

    assert report.returncode == 0, report.stderr
    assert _mode(elsewhere / "store.db") == 0o600
    if (elsewhere / "store.db-wal").exists():
        assert _mode(elsewhere / "store.db-wal") == 0o600
    assert _mode(elsewhere / "other.txt") == 0o644
    assert _mode(elsewhere) == 0o755  # the directory is the operator's
    assert f"made {elsewhere / 'store.db'} private: mode 0644 -> 0600" in report.stderr


def test_relay_makes_a_loose_data_dir_private(clean_env: dict[str, str]) -> None:
    data = _loosened_data_dir(clean_env, tuple(name for name in SECRETS if name != "relay-tls.pem"))
    port = free_port()
    relay = forkserver.spawn(
        ["relay", "--port", str(port)],
        clean_env | {"DEADPIXEL_SMTP_HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert relay.poll() is None, relay.stderr.read().decode()  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the relay did not start"
                time.sleep(0.05)
    finally:
        os.killpg(relay.pid, signal.SIGTERM)
        relay.wait(20)
    assert relay.stderr is not None
    _assert_private(data, relay.stderr.read().decode())
    assert _mode(data / "relay-tls.pem") == 0o600  # generated on this start
    assert _doctor_permissions(clean_env)["status"] == "ok"
