from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deadpixel.config import ConfigError, load_settings


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
