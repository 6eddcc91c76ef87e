"""The age of the built-in country and network data: addresses move between networks and countries."""

from __future__ import annotations

import datetime as dt
import re

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


def geo_data(ctx: Context, today: dt.date | None = None) -> Finding:
    from deadpixel.enrich.geo import builtin_data_info

    fix = (
        "install a newer deadpixel (or the geo data package it uses); for region and city, point "
        "DEADPIXEL_GEOIP_DATABASE at a current .mmdb"
    )
    try:
        info = builtin_data_info()
    except Exception as exc:
        return warn(f"cannot read the built-in geo data: {one_line(exc)}", fix)
    when = snapshot_date(info)
    if when is None:
        return warn(f"cannot tell the date of the built-in geo data from {info!r}", fix)
    age = ((today or dt.date.today()) - when).days
    if age > STALE_DAYS:
        return warn(f"the built-in geo data is from {when} ({age // 30} months old): countries drift", fix)
    return ok(f"the built-in geo data is from {when} ({age} days old)")
