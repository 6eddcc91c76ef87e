from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deadpixel.config import ConfigError, load_settings
from tests.conftest import Server


def test_defaults_put_everything_in_the_data_dir(tmp_path: Path) -> None:
    s = load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'deadpixel.db'}"
    assert s.keys_file == tmp_path / "signing-keys.json"
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 1)
    assert s.base_url == "http://127.0.0.1:8000"
    assert s.trusted_proxies == ()
    assert s.proxy_header == "x-forwarded-for"


def test_environment_beats_the_toml_file_and_overrides_beat_both(tmp_path: Path) -> None:
    (tmp_path / "deadpixel.toml").write_text(
        'port = 9000\nbase_url = "https://t.example.com/"\ntrusted_proxies = ["10.0.0.0/8"]\n'
    )
    env = {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_PORT": "9100"}
    s = load_settings(env)
    assert s.port == 9100
    assert s.base_url == "https://t.example.com"
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8"]
    assert load_settings(env, port=9200).port == 9200


def test_the_proxy_header_is_named_in_any_case(tmp_path: Path) -> None:
    for given, meant in [
        ("Forwarded", "forwarded"),
        ("X-Real-IP", "x-real-ip"),
        ("x-forwarded-for", "x-forwarded-for"),
    ]:
        env = {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_PROXY_HEADER": given}
        assert load_settings(env).proxy_header == meant


def test_base_url_follows_host_and_port_by_default(tmp_path: Path) -> None:
    s = load_settings(
        {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_HOST": "0.0.0.0", "DEADPIXEL_PORT": "81"}
    )
    assert s.base_url == "http://127.0.0.1:81"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("PORT", "eighty", "DEADPIXEL_PORT: must be a whole number"),
        ("PORT", "70000", "DEADPIXEL_PORT: must be between"),
        ("WORKERS", "0", "DEADPIXEL_WORKERS"),
        ("BASE_URL", "ftp://x", "DEADPIXEL_BASE_URL"),
        ("BASE_URL", "https://x/?a=1", "DEADPIXEL_BASE_URL"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense", "DEADPIXEL_TRUSTED_PROXIES: 'nonsense'"),
        ("PROXY_HEADER", "True-Client-IP", "DEADPIXEL_PROXY_HEADER: must be one of x-forwarded-for"),
        ("DATABASE_URL", "mysql://x", "DEADPIXEL_DATABASE_URL"),
        ("CONFIG", "/nonexistent.toml", "DEADPIXEL_CONFIG"),
        ("TIMEZONE", "Mars/Olympus_Mons", "DEADPIXEL_TIMEZONE: must be an IANA time zone"),
        ("TIMEZONE", "../../etc/passwd", "DEADPIXEL_TIMEZONE: must be an IANA time zone"),
    ],
)
def test_a_bad_setting_names_itself(tmp_path: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path), f"DEADPIXEL_{name}": value})


def test_a_broken_toml_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "deadpixel.toml").write_text("port = = 1")
    with pytest.raises(ConfigError, match="DEADPIXEL_CONFIG: cannot read"):
        load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path)})


@pytest.mark.parametrize("command", [["serve"], ["report"], ["pixel", "new", "--to", "a@b.example"]])
def test_the_cli_stops_on_a_bad_setting_with_one_line_and_no_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deadpixel", *command],
        env={"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_PORT": "nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: bad setting: DEADPIXEL_PORT: must be a whole number (got 'nope')"
    ]


# Container secrets: DEADPIXEL_<NAME>_FILE names a file that holds the value.


@pytest.mark.parametrize(
    ("name", "value", "extra"),
    [
        ("DATABASE_URL", "postgresql://deadpixel:s3cret@db/deadpixel", {}),
        ("SMTP_PASSWORD", "pa ss\tword", {"DEADPIXEL_SMTP_USERNAME": "me"}),
        ("BOUNCE_IMAP_PASSWORD", "imap-secret", {"DEADPIXEL_BOUNCE_IMAP_USERNAME": "bounces"}),
        ("NOTIFY_URL", "https://ntfy.example.org/secret-topic", {}),
    ],
)
def test_a_secret_comes_from_the_file_its_file_variable_names(
    tmp_path: Path, name: str, value: str, extra: dict[str, str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(value + "\n")
    env = {"DEADPIXEL_DATA_DIR": str(tmp_path), f"DEADPIXEL_{name}_FILE": str(secret), **extra}
    assert getattr(load_settings(env), name.lower()) == value


def test_an_empty_secret_variable_does_not_stand_in_the_way_of_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("sqlite:////srv/x.db\r\n")
    env = {
        "DEADPIXEL_DATA_DIR": str(tmp_path),
        "DEADPIXEL_DATABASE_URL": "",
        "DEADPIXEL_DATABASE_URL_FILE": str(secret),
    }
    assert load_settings(env).database_url == "sqlite:////srv/x.db"
    env["DEADPIXEL_DATABASE_URL_FILE"] = ""  # an empty _FILE (e.g. `${VAR:-}` in compose) is no file
    env["DEADPIXEL_DATABASE_URL"] = "sqlite:////srv/y.db"
    assert load_settings(env).database_url == "sqlite:////srv/y.db"


def test_a_secret_set_both_ways_is_an_error_naming_both(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file")
    env = {
        "DEADPIXEL_DATA_DIR": str(tmp_path),
        "DEADPIXEL_SMTP_USERNAME": "me",
        "DEADPIXEL_SMTP_PASSWORD": "from-env",
        "DEADPIXEL_SMTP_PASSWORD_FILE": str(secret),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == (
        "DEADPIXEL_SMTP_PASSWORD: is set and so is DEADPIXEL_SMTP_PASSWORD_FILE; set only one of them"
    )


@pytest.mark.parametrize("kind", ["missing", "directory", "not text"])
def test_an_unreadable_secret_file_names_the_setting_and_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir()
    elif kind == "not text":
        path.write_bytes(b"\xff\xfe\x00")
    env = {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_BOUNCE_IMAP_PASSWORD_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(f"DEADPIXEL_BOUNCE_IMAP_PASSWORD_FILE: cannot read {path}: ")
    assert "\n" not in message


def test_only_secret_settings_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "port").write_text("9999")
    s = load_settings({"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_PORT_FILE": str(tmp_path / "port")})
    assert s.port == 8000


def test_the_cli_reports_an_unreadable_secret_file_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deadpixel", "report"],
        env={
            "DEADPIXEL_DATA_DIR": str(tmp_path),
            "DEADPIXEL_DATABASE_URL_FILE": str(tmp_path / "nope"),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: bad setting: DEADPIXEL_DATABASE_URL_FILE: cannot read {tmp_path / 'nope'}: "
        "No such file or directory"
    ]


def test_the_server_and_its_workers_use_the_database_url_file(tmp_path: Path) -> None:
    """serve hands its settings to the workers through the environment; a _FILE secret must survive that."""
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    secret = tmp_path / "database_url"
    secret.write_text(f"sqlite:///{store}\n")
    server = Server(
        env={"DEADPIXEL_DATA_DIR": str(tmp_path / "data"), "DEADPIXEL_DATABASE_URL_FILE": str(secret)}
    )
    server.start()
    try:
        assert httpx.get(server.url + "/readyz", timeout=5).status_code == 200
        assert store.is_file()
        assert not (tmp_path / "data" / "deadpixel.db").exists()
    finally:
        assert server.stop() == 0
