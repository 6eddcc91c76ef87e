"""The age of the geo data: addresses move between networks and countries, so old data misplaces readers."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from deadpixel.doctor.context import Context
from deadpixel.doctor.result import Finding, ok, one_line, warn

STALE_DAYS = 183  # about six months
# A date in the snapshot's name, as YYYYMMDD or YYYY-MM-DD, not inside a longer run of digits.
_DATE = re.compile(r"(?<!\d)(20\d\d)-?(\d\d)-?(\d\d)(?!\d)")


def snapshot_date(info: str) -> dt.date | None:
    """The first real calendar date in a snapshot name, or None."""
    for year, month, day in _DATE.findall(info):
        try:
            return dt.date(int(year), int(month), int(day))
        except ValueError:
            continue
    return None


def _mmdb_date(path: Path) -> dt.date:
    """When a .mmdb file was built, from its own metadata (not the file's mtime, which a copy resets)."""
    import maxminddb

    with maxminddb.open_database(str(path)) as reader:
        epoch = reader.metadata().build_epoch
    return dt.datetime.fromtimestamp(epoch, dt.UTC).date()


def geo_data(ctx: Context, today: dt.date | None = None) -> Finding:
    from deadpixel.enrich.geo import builtin_data_info

    today = today or dt.date.today()
    fix = (
        "install a newer deadpixel (or the geo data package it uses); for region and city, point "
        "DEADPIXEL_GEOIP_DATABASE at a current .mmdb"
    )
    try:
        info = builtin_data_info()
    except Exception as exc:
        return warn(f"cannot read the built-in geo data: {one_line(exc)}", fix)
    dated: list[tuple[str, dt.date]] = []
    when = snapshot_date(info)
    if when is None:
        return warn(f"cannot tell the date of the built-in geo data from {info!r}", fix)
    dated.append(("the built-in geo data", when))
    mmdb = ctx.settings.geoip_database
    if mmdb is not None:
        try:
            dated.append((f"DEADPIXEL_GEOIP_DATABASE ({mmdb.name})", _mmdb_date(mmdb)))
        except Exception as exc:
            return warn(f"cannot read DEADPIXEL_GEOIP_DATABASE {mmdb}: {one_line(exc)}", fix)
    parts, stale = [], False
    for what, day in dated:
        age = (today - day).days
        stale = stale or age > STALE_DAYS
        parts.append(
            f"{what} is from {day} ({age // 30} months old)" if age > 60 else f"{what} is from {day}"
        )
    message = "; ".join(parts)
    if stale:
        return warn(f"{message}: older than six months, so some readers are placed wrongly", fix)
    return ok(message)
