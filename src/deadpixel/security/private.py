"""Owner-only modes on what deadpixel keeps: the data dir 0700, its secrets, database and spool 0600.

New files are created that way, but a data dir made by hand, restored from a backup or copied with ``cp -r``
under a 0022 umask comes back 0755 with 0644 files, and then every local user can read the webhook secrets,
the signing keys and the readers' opens. So every command that opens the store, and ``serve`` and ``relay``,
tighten them again at start and log one line per file they changed. Only deadpixel's own names in its own
data dir are touched: a file a setting points at elsewhere (a TLS key, a config file) is its owner's to keep.
Symbolic links are not followed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("deadpixel.private")  # the name its log lines have always carried

DIR_MODE = 0o700
FILE_MODE = 0o600
# Files deadpixel writes in its data dir that hold a secret (or, deadpixel.toml, may).
SECRET_NAMES = (
    "signing-keys.json",
    "session-secret",
    "setup-token",
    "relay-tls.pem",
    "deadpixel.toml",
)
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")
SPOOL_NAME = "spool"


def tighten(path: Path, mode: int) -> bool:
    """Take every permission beyond ``mode`` away from ``path`` (never adding any); True if it changed.

    A path that is missing, a symbolic link or not ours is left alone; a chmod that fails is logged.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        return False
    old = stat.S_IMODE(info.st_mode)
    new = old & mode
    if new == old:
        return False
    try:
        os.chmod(path, new)
    except OSError as exc:
        log.warning("cannot make %s private (mode %04o): %s", path, old, exc.strerror or exc)
        return False
    log.warning("made %s private: mode %04o -> %04o (others could read it)", path, old, new)
    return True


def tighten_sqlite(database: Path, *, create: bool = False) -> None:
    """The SQLite file and its -wal, -shm and -journal files: readers' addresses, webhook secrets.

    With ``create``, a file that does not exist yet is made 0600 first: SQLite would follow the umask
    (usually 0644), and it gives its -wal and -shm files the database file's mode.
    """
    if create:
        # It may exist (the usual case), or not be creatable here: then SQLite says why when it opens it.
        with contextlib.suppress(OSError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for suffix in SQLITE_COMPANIONS:
        tighten(database.with_name(database.name + suffix), FILE_MODE)


def tighten_data_dir(data_dir: Path) -> None:
    """The data dir, deadpixel's secrets in it, the default database and the spool, files and directories."""
    tighten(data_dir, DIR_MODE)
    for name in SECRET_NAMES:
        tighten(data_dir / name, FILE_MODE)
    tighten_sqlite(data_dir / "deadpixel.db")
    spool = data_dir / SPOOL_NAME
    if spool.is_dir() and not spool.is_symlink():
        tighten(spool, DIR_MODE)
        for root, dirs, files in os.walk(spool):  # os.walk does not descend into linked directories
            _tighten_all((Path(root) / name for name in dirs), DIR_MODE)
            _tighten_all((Path(root) / name for name in files), FILE_MODE)


def _tighten_all(paths: Iterable[Path], mode: int) -> None:
    for path in paths:
        tighten(path, mode)
