"""Run every check in order; a check that breaks is reported as failed, never as a traceback."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deadpixel.config import Settings
from deadpixel.doctor import clock, database, files, geo, mail, web
from deadpixel.doctor.context import DEFAULT_TIMEOUT, Context
from deadpixel.doctor.result import Finding, Result, one_line

Check = Callable[[Context], Finding]

CHECKS: tuple[tuple[str, Check], ...] = (
    ("base_url", web.base_url),
    ("pixel", web.pixel),
    ("tls", web.tls),
    ("proxies", web.proxies),
    ("permissions", files.permissions),
    ("database", database.database),
    ("disk", files.disk),
    ("clock", clock.clock),
    ("signing_keys", files.signing_keys),
    ("smtp", mail.smtp),
    ("bounce_mx", mail.bounce_mx),
    ("geo_data", geo.geo_data),
)


def run_checks(
    settings: Settings,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    checks: Sequence[tuple[str, Check]] = CHECKS,
) -> list[Result]:
    ctx = Context(settings, timeout)
    results = []
    try:
        for name, check in checks:
            try:
                found = check(ctx)
            except Exception as exc:
                found = Finding("fail", f"the check itself broke: {one_line(exc)}", "report this as a bug")
            results.append(Result(name, found.status, found.message, found.fix))
    finally:
        ctx.close()
    return results
