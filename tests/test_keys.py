from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from deadpixel.security.keys import KeyFileError, KeyFileReloader, load_or_create_keys, read_keys, rotate_keys


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    os.umask(0o022)
    path = tmp_path / "signing-keys.json"
    first = load_or_create_keys(path)
    assert mode(path) == 0o600
    assert len(first.current) == 32
    assert load_or_create_keys(path) == first


def test_rotation_adds_a_current_key_and_keeps_the_old_ones(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys.json"
    first = load_or_create_keys(path)
    rotated = rotate_keys(path)
    assert rotated.current_id == first.current_id + 1
    assert rotated.keys[first.current_id] == first.current
    assert read_keys(path) == rotated
    assert mode(path) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("content", ["", "{", '{"current": 3, "keys": {"1": "00"}}', '{"keys": {}}'])
def test_a_broken_keys_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "signing-keys.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match="signing keys"):
        load_or_create_keys(path)


def test_reloader_notices_a_rotation_but_checks_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "signing-keys.json"
    load_or_create_keys(path)
    reloader = KeyFileReloader(path, min_interval=0.2)
    assert reloader() is None  # unchanged
    time.sleep(0.01)
    rotated = rotate_keys(path)
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert reloader() is None  # too soon after the last check
    time.sleep(0.25)
    assert reloader() == rotated
