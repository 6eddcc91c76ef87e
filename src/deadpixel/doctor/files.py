"""Checks of the data dir: private modes, free space, the signing keys."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path

from deadpixel.doctor.context import Context
from deadpixel.doctor.result import Finding, fail, ok, warn
from deadpixel.security.private import SECRET_NAMES, SQLITE_COMPANIONS

MiB = 1024 * 1024
GiB = 1024 * MiB
DISK_FAIL_BYTES = 100 * MiB
DISK_WARN_BYTES = 1 * GiB
DISK_WARN_FRACTION = 0.10
# Files deadpixel keeps in the data dir that hold secrets or readers' data: the same names every start
# makes private again (deadpixel.security.private), so a start leaves nothing for this check to find.


def _open_to_others(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


def secret_files(ctx: Context) -> list[Path]:
    """Every file deadpixel's settings name that must be readable by its owner alone, if it exists."""
    settings = ctx.settings
    candidates = [settings.data_dir / name for name in SECRET_NAMES]
    database = ctx.sqlite_path
    if database is not None:
        candidates += [database.with_name(database.name + suffix) for suffix in SQLITE_COMPANIONS]
    if settings.relay_tls_key is not None:
        candidates.append(settings.relay_tls_key)
    config = os.environ.get("DEADPIXEL_CONFIG")
    if config:
        candidates.append(Path(config))
    seen: list[Path] = []
    for path in candidates:
        if path.is_file() and path not in seen:
            seen.append(path)
    return seen


def permissions(ctx: Context) -> Finding:
    """The data dir is 0700 and the database, keys and secrets 0600: they hold readers' data and keys."""
    data_dir = ctx.settings.data_dir
    if not data_dir.is_dir():
        return fail(
            f"the data dir {data_dir} does not exist",
            "set DEADPIXEL_DATA_DIR to the data dir deadpixel serve uses (serve creates it, 0700)",
        )
    fixes: list[str] = []
    problems: list[str] = []
    if _open_to_others(data_dir):
        problems.append(f"{data_dir} is {stat.S_IMODE(data_dir.stat().st_mode):04o}")
        fixes.append(f"chmod 700 {shlex.quote(str(data_dir))}")
    loose = [path for path in secret_files(ctx) if _open_to_others(path)]
    if loose:
        problems += [f"{path} is {stat.S_IMODE(path.stat().st_mode):04o}" for path in loose]
        fixes.append("chmod 600 " + " ".join(shlex.quote(str(path)) for path in loose))
    if problems:
        return fail(
            "others can read what only deadpixel should: " + "; ".join(problems),
            " && ".join(fixes),
        )
    return ok(f"{data_dir} is private (0700) and so are its database, keys and secrets (0600)")


def _size(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def disk_status(free: int, total: int) -> str:
    """'fail' under 100 MiB free, 'warn' under 1 GiB or 10 %, else 'ok'."""
    if free < DISK_FAIL_BYTES:
        return "fail"
    if free < DISK_WARN_BYTES or free < total * DISK_WARN_FRACTION:
        return "warn"
    return "ok"


def disk(ctx: Context) -> Finding:
    """Free space where the data dir (and so the SQLite store and the spool) lives."""
    where = ctx.settings.data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    share = usage.free / usage.total if usage.total else 0.0
    message = f"{_size(usage.free)} free of {_size(usage.total)} ({share:.0%}) where {where} lives"
    status = disk_status(usage.free, usage.total)
    fix = (
        "free space on that file system or move the data dir to a larger one: when it fills, new opens "
        "wait in memory and the spool, and SQLite stops writing"
    )
    if status == "fail":
        return fail(message, fix)
    if status == "warn":
        return warn(message, fix)
    return ok(message)


def signing_keys(ctx: Context) -> Finding:
    """The keys that sign every pixel and link exist, load, and are readable by their owner alone."""
    from deadpixel.security.keys import KeyFileError, read_keys

    path = ctx.settings.keys_file
    if not path.is_file():
        return fail(
            f"no signing keys at {path}",
            "restore signing-keys.json from your backup if mail was already sent (new keys would not "
            "recognise those pixels); on a new install, deadpixel serve creates them on first start",
        )
    try:
        keys = read_keys(path)
    except KeyFileError as exc:
        return fail(str(exc), "restore signing-keys.json from your backup (deadpixel backup keeps a copy)")
    if _open_to_others(path):
        mode = stat.S_IMODE(path.stat().st_mode)
        return fail(
            f"{path} is {mode:04o}: anyone who reads it can forge opens and clicks",
            f"chmod 600 {shlex.quote(str(path))}",
        )
    return ok(f"{len(keys.keys)} signing key(s) in {path}, current id {keys.current_id}, mode 0600")
