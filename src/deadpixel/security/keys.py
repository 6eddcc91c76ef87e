"""Signing keys: generated on first use, stored 0600 in the data dir, rotated without breaking old pixels.

Tokens carry the id of the key that signed them, so pixels already sitting in inboxes keep verifying after
``deadpixel secret rotate`` makes a new key current.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from deadpixel.errors import DeadpixelError

MAX_KEY_ID = 255  # one byte in every token


class KeyFileError(DeadpixelError):
    """The keys file exists but cannot be used."""


@dataclass(frozen=True, slots=True)
class SigningKeys:
    current_id: int
    keys: dict[int, bytes]

    @property
    def current(self) -> bytes:
        return self.keys[self.current_id]


def _write_private(path: Path, keys: SigningKeys) -> None:
    """Write atomically with mode 0600 from the first byte (no window where the file is world-readable)."""
    payload = {
        "current": keys.current_id,
        "keys": {str(kid): key.hex() for kid, key in sorted(keys.keys.items())},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_keys(path: Path) -> SigningKeys:
    try:
        data = json.loads(path.read_text())
        keys = {int(kid): bytes.fromhex(key) for kid, key in data["keys"].items()}
        current = int(data["current"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"cannot read signing keys from {path}: {exc}") from None
    if current not in keys or any(len(k) < 16 for k in keys.values()):
        raise KeyFileError(f"signing keys in {path} are incomplete")
    return SigningKeys(current, keys)


def load_or_create_keys(path: Path) -> SigningKeys:
    if path.exists():
        return read_keys(path)
    keys = SigningKeys(1, {1: secrets.token_bytes(32)})
    try:
        # O_EXCL: if two processes start at once, exactly one key is generated and both use it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_keys(path)
    os.close(fd)
    _write_private(path, keys)
    return keys


def rotate_keys(path: Path) -> SigningKeys:
    old = load_or_create_keys(path)
    new_id = max(old.keys) + 1
    if new_id > MAX_KEY_ID:
        raise KeyFileError(f"all {MAX_KEY_ID} key ids are used")
    rotated = SigningKeys(new_id, {**old.keys, new_id: secrets.token_bytes(32)})
    _write_private(path, rotated)
    return rotated


class KeyFileReloader:
    """Re-reads the keys file when it changed, at most once a second, so a flood of tokens with an unknown
    key id costs a clock read, not a file read each."""

    def __init__(self, path: Path, min_interval: float = 1.0) -> None:
        self._path = path
        self._min_interval = min_interval
        self._checked_at = 0.0
        self._mtime = self._stat()

    def _stat(self) -> float:
        try:
            return self._path.stat().st_mtime
        except OSError:
            return 0.0

    def __call__(self) -> SigningKeys | None:
        now = time.monotonic()
        if now - self._checked_at < self._min_interval:
            return None
        self._checked_at = now
        mtime = self._stat()
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            return read_keys(self._path)
        except KeyFileError:
            return None
