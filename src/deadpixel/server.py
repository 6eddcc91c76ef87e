"""Start the HTTP server: prepare the store once, then hand the app to Granian's worker processes.

Granian (Rust HTTP/1.1 and HTTP/2, process-per-worker) gives the pixel the most requests per CPU second of the
ASGI servers we measured; see docs/decisions.md.
"""

from __future__ import annotations

import os

from deadpixel.config import ENV_PREFIX, Settings, ensure_data_dir
from deadpixel.keys import load_or_create_keys
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


def export_to_workers(settings: Settings) -> None:
    """Workers are fresh processes that read settings from the environment: hand them ours."""
    os.environ[ENV_PREFIX + "DATA_DIR"] = str(settings.data_dir)
    os.environ[ENV_PREFIX + "DATABASE_URL"] = settings.database_url
    os.environ[ENV_PREFIX + "HOST"] = settings.host
    os.environ[ENV_PREFIX + "PORT"] = str(settings.port)
    os.environ[ENV_PREFIX + "BASE_URL"] = settings.base_url


def serve(settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    prepare(settings)
    export_to_workers(settings)
    if settings.metrics_port:
        from deadpixel.hooks.registry import backlog_gauges
        from deadpixel.metrics import serve_prometheus

        gauges = backlog_gauges(create_engine(settings.database_url))
        serve_prometheus(settings.data_dir, settings.metrics_host, settings.metrics_port, gauges)
    Granian(
        "deadpixel.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        log_access=False,
        respawn_failed_workers=True,
    ).serve()
