"""Start the HTTP server: prepare the store once, then hand the app to uvicorn's worker processes.

uvicorn serves the ASGI app, except that its connections start with ``deadpixel.track.protocol``, which
answers the pixel itself and hands every other request to uvicorn's own protocol; see docs/design.md.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from deadpixel.accounts import setup_link
from deadpixel.accounts.users import has_users
from deadpixel.config import ENV_PREFIX, Settings, ensure_data_dir
from deadpixel.security.keys import load_or_create_keys
from deadpixel.store import rollups
from deadpixel.store.db import create_engine
from deadpixel.store.migrate import ensure_current


def prepare(settings: Settings) -> None:
    """Everything that must happen once, before any worker starts: data dir, keys, schema, and the charts'
    rollups caught up (after an upgrade, the first page would otherwise fold in every open)."""
    ensure_data_dir(settings)
    load_or_create_keys(settings.keys_file)
    engine = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    try:
        ensure_current(engine)
        rollups.catch_up(writer, engine)
    finally:
        writer.dispose()
        engine.dispose()


def offer_setup_link(settings: Settings) -> str | None:
    """While no account exists, a fresh one-time link to create the first one in the browser, printed on
    the console only (never logged to a file or a collector: it is as good as a password until used).
    Written before the workers start, so whichever worker answers knows it."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            exists = has_users(conn)
    finally:
        engine.dispose()
    if exists:
        setup_link.discard(settings.data_dir)
        return None
    link = f"{settings.base_url}/setup/{setup_link.issue(settings.data_dir)}"
    print(f"deadpixel: create the first account in your browser (works once): {link}", file=sys.stderr)
    sys.stderr.flush()
    return link


def export_to_workers(settings: Settings) -> None:
    """Workers are fresh processes that read settings from the environment: hand them ours."""
    os.environ[ENV_PREFIX + "DATA_DIR"] = str(settings.data_dir)
    if not os.environ.get(ENV_PREFIX + "DATABASE_URL_FILE"):  # a secret file: workers read it themselves
        os.environ[ENV_PREFIX + "DATABASE_URL"] = settings.database_url
    os.environ[ENV_PREFIX + "HOST"] = settings.host
    os.environ[ENV_PREFIX + "PORT"] = str(settings.port)
    os.environ[ENV_PREFIX + "BASE_URL"] = settings.base_url


# Seconds a stopping worker waits for its last requests: feeds end on their own within web.feed.LIFETIME.
GRACEFUL_STOP = 20


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    import uvicorn

    from deadpixel.track.adapter import check_uvicorn

    check_uvicorn()  # a warning on a uvicorn release the pixel's protocol was not tested with
    prepare(settings)
    offer_setup_link(settings)
    export_to_workers(settings)
    if settings.metrics_port:
        from deadpixel.hooks.registry import backlog_gauges
        from deadpixel.server.metrics import serve_prometheus

        gauges = backlog_gauges(create_engine(settings.database_url))
        serve_prometheus(settings.data_dir, settings.metrics_host, settings.metrics_port, gauges)
    # Once it has drained, uvicorn raises again the signal that stopped it, for the handler it found: a stop
    # that was asked for ends with status 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped)
    uvicorn.run(
        "deadpixel.server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="deadpixel.track.protocol:PixelProtocol",
        ws="none",
        interface="asgi3",
        lifespan="on",
        proxy_headers=False,  # DEADPIXEL_TRUSTED_PROXIES decides whom to believe (track.client_ip)
        server_header=False,
        access_log=False,
        log_config=None,  # the app configures logging (deadpixel.server.logs)
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_STOP,
    )
