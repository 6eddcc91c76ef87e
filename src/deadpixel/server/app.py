"""The ASGI application: the pixel hot path first, everything else through Starlette.

uvicorn (or any ASGI server) loads ``create_app`` in each worker process. Settings come from the environment,
so every worker of ``deadpixel serve --workers N`` builds the same app.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import Connection, Engine, text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route

from deadpixel.accounts import access
from deadpixel.api import api_mount
from deadpixel.api.body import MAX_BODY as MAX_API_BODY
from deadpixel.api.body import MAX_PREVIEW_BODY
from deadpixel.api.campaigns import MAX_BODY as MAX_CAMPAIGN_BODY
from deadpixel.api.contacts import MAX_IMPORT_BODY
from deadpixel.config import Settings, load_settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.enrich.privacy import redacted
from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.hooks.deliver import Deliverer, DeliveryThread, Policy
from deadpixel.security.keys import KeyFileReloader, load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.job_runner import CampaignJobs
from deadpixel.send.winner import WinnerSends
from deadpixel.server.bodies import BodyLimit, Limit
from deadpixel.server.due import DueWorkThread
from deadpixel.server.heap import freeze_long_lived, keep_long_lived_frozen
from deadpixel.server.logs import configure as configure_logs
from deadpixel.server.metrics import MetricsPublisher, Snapshot, metrics_dir
from deadpixel.store import rollups
from deadpixel.store.clicks import purge_click_detail, write_clicks
from deadpixel.store.db import WalCheckpointer, create_engine, is_sqlite
from deadpixel.store.links import LinkResolver
from deadpixel.store.maintenance import purge_raw_detail
from deadpixel.store.writes import KnownMessages, write_opens
from deadpixel.track.app import PIXEL_PREFIX, PixelEndpoint
from deadpixel.track.cap import OpenCap
from deadpixel.track.click import CLICK_PREFIX, ClickEndpoint
from deadpixel.track.client_ip import ClientIPResolver
from deadpixel.track.ingest import GroupCommitWriter
from deadpixel.track.spool import Spool, node_spool_dir
from deadpixel.web.dashboard import Dashboard
from deadpixel.web.framing import NoFraming
from deadpixel.web.unsubscribe import unsubscribe_routes

log = logging.getLogger("deadpixel.server.app")  # the name its log lines have always carried
# Request bodies, in bytes (deadpixel.server.bodies; docs/design.md says why these): the sign-in and dashboard
# forms and every route that takes no body; a one-click unsubscribe; the JSON API (docs/api.md).
MAX_BODY = 16 * 1024
MAX_UNSUBSCRIBE_BODY = 4 * 1024
MAX_COMPOSE_BODY = 8 * 1024 * 1024  # the new-campaign form: a CSV of up to 5 MiB and the HTML, twice at most
ROLLUP_INTERVAL = 5.0  # seconds between background folds of new opens into the charts' rollups
# A background fold's chunk (opens) and its pause after each, as a multiple of the chunk's time: a few
# milliseconds of folding at a time, and never more than half the interpreter (see rollups.catch_up).
FOLD_CHUNK = 500
FOLD_REST = 1.0
# Headers a proxy adds to say whom it forwards for (RFC 7239 Forwarded, the de-facto X-Forwarded-For and
# X-Real-IP, and Via).
FORWARDING_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip", b"via"})


def build_web(
    engine: Engine,
    signer: TokenSigner | None = None,
    settings: Settings | None = None,
    api: Mount | None = None,
    writer: Engine | None = None,
) -> Starlette:
    """``writer`` takes SQLite's write lock up front, for the pages that write (defaults to ``engine``)."""

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    def _database_answers() -> bool:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            log.warning("readiness check: the database does not answer", exc_info=True)
            return False
        return True

    async def readyz(_: Request) -> PlainTextResponse:
        if await asyncio.to_thread(_database_answers):
            return PlainTextResponse("ready\n")
        return PlainTextResponse("database unreachable\n", status_code=503)

    resolver = ClientIPResolver.from_settings(settings) if settings is not None else ClientIPResolver(())

    async def healthz_client(request: Request) -> JSONResponse:
        # What address the server takes this request to come from, so ``deadpixel doctor`` can tell whether
        # DEADPIXEL_TRUSTED_PROXIES fits the proxy in front. It tells the caller only about its own request.
        peer = request.client.host if request.client else None
        raw = request.headers.raw
        view = {
            "client": resolver.resolve(peer, raw),
            "forwarded": any(name.lower() in FORWARDING_HEADERS for name, _ in raw),
            "trusted": resolver.trusts(peer),
        }
        return JSONResponse(view, headers={"cache-control": "no-store"})

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/healthz/client", healthz_client),
        Route("/readyz", readyz),
    ]
    if signer is not None:
        routes += unsubscribe_routes(engine, signer)
    if api is not None:
        routes.append(api)
    if signer is not None and settings is not None:
        routes += Dashboard(engine, settings, signer, writer=writer or engine).routes()
    access.check_routes(access.walk(routes))  # every route has a role rule, or the server does not start
    return Starlette(routes=routes, middleware=[Middleware(NoFraming)])


class Deadpixel:
    """Route by path prefix before any framework sees the request, so the pixel pays for none."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings.database_url)
        classifier = OpenClassifier.from_settings(settings)
        # What a spool file or a log line may hold of a reader's address: what the store keeps.
        redact_open = functools.partial(redacted, mode=settings.ip_mode)
        redact_click = functools.partial(redacted, mode=settings.ip_mode)
        writer_engine = create_engine(
            settings.database_url,
            writer=True,
            background_checkpoints=True,
            lock_timeout_ms=settings.commit_deadline_ms,
        )
        on_sqlite = is_sqlite(writer_engine)
        self.checkpointer = WalCheckpointer(settings.database_url) if on_sqlite else None
        # On SQLite the writer keeps the charts' rollups (rollups.WriterRollups); elsewhere a task does.
        self.writer_rollups = rollups.WriterRollups() if on_sqlite else None
        self.cap = OpenCap(settings.open_cap) if settings.open_cap else None
        self.writer: GroupCommitWriter[OpenEvent] = GroupCommitWriter(
            writer_engine,
            functools.partial(
                write_opens,
                builder=classifier,
                cap=self.cap,
                folds=self.writer_rollups,
                memory=KnownMessages() if on_sqlite else None,
            ),
            batch_size=settings.batch_size,
            spool=Spool(node_spool_dir(settings.data_dir) / "opens", OpenEvent, redact_open),
            after_batch=self._writer_upkeep if on_sqlite else None,
            redact=redact_open,
        )
        # Clicks are rare next to opens: a writer of their own keeps them off the pixel's batches.
        self.click_writer: GroupCommitWriter[ClickEvent] = GroupCommitWriter(
            create_engine(settings.database_url, writer=True, lock_timeout_ms=settings.commit_deadline_ms),
            functools.partial(write_clicks, builder=classifier.clicks),
            batch_size=settings.batch_size,
            name="deadpixel-click-writer",
            spool=Spool(node_spool_dir(settings.data_dir) / "clicks", ClickEvent, redact_click),
            redact=redact_click,
        )
        signer = TokenSigner(
            load_or_create_keys(settings.keys_file), reload=KeyFileReloader(settings.keys_file)
        )
        client_ip = ClientIPResolver.from_settings(settings)
        self.pixel = PixelEndpoint(signer, self.writer, client_ip)
        self.click = ClickEndpoint(signer, LinkResolver(self.engine), self.click_writer, client_ip)
        # The API's writes (new messages, tokens' last use) take SQLite's write lock up front, as writers do.
        self.api_engine = create_engine(settings.database_url, writer=True)
        api = api_mount(self.engine, self.api_engine, settings, signer)
        self.web = build_web(self.engine, signer, settings, api, writer=self.api_engine)
        self.bounded = BodyLimit(
            self._route,
            MAX_BODY,
            [
                Limit("/u/", MAX_UNSUBSCRIBE_BODY),
                Limit("/compose", MAX_COMPOSE_BODY),
                Limit("/api/", MAX_API_BODY, json=True),
                Limit("/api/v1/campaigns", MAX_CAMPAIGN_BODY, json=True),
                Limit("/api/v1/contacts/import", MAX_IMPORT_BODY, json=True),
                Limit("/api/v1/preview", MAX_PREVIEW_BODY, json=True),
                Limit("/api/v1/test-send", MAX_PREVIEW_BODY, json=True),
            ],
        )
        self.metrics = MetricsPublisher(metrics_dir(settings.data_dir), self.snapshot)
        # Every worker delivers webhooks; leases in the outbox keep them off each other's rows.
        deliverer = Deliverer(self.engine, self.api_engine, Policy.from_settings(settings))
        self.webhooks = DeliveryThread(deliverer)
        # Work that comes due in the store (deadpixel.server.due): stored campaigns, A/B winners; leases
        # in the store let every worker of every server look, and only one take each piece.
        self.due = DueWorkThread(
            [
                CampaignJobs(settings, self.api_engine, signer, reads=self.engine),
                WinnerSends(settings, self.api_engine, signer, reads=self.engine),
            ]
        )

    def snapshot(self) -> Snapshot:
        track, ingest = self.pixel.stats, self.writer.stats
        capped = self.cap.capped_total if self.cap else 0
        return {
            "pixel_requests_total": track.requests,
            "invalid_tokens_total": track.invalid_tokens,
            "opens_recorded_total": ingest.events_written - capped,
            "opens_capped_total": capped,
            "opens_dropped_total": ingest.events_dropped,
            "opens_for_erased_messages_total": ingest.events_for_erased_messages,
            "batches_total": ingest.batches,
            "batch_size_max": ingest.largest_batch,
            "commit_seconds_total": ingest.commit_seconds,
            "commit_failures_total": ingest.commit_failures,
            "opens_spooled_total": ingest.events_spooled,
            "opens_replayed_total": ingest.events_replayed,
            "spool_failures_total": ingest.spool_failures + self.click_writer.stats.spool_failures,
            "events_held": self.writer.held + self.click_writer.held,
            "events_lost_total": ingest.events_lost + self.click_writer.stats.events_lost,
            "queue_depth": self.writer.queue_depth,
            "click_requests_total": self.click.stats.requests,
            "invalid_click_tokens_total": self.click.stats.invalid_tokens + self.click.stats.unknown_links,
            "clicks_recorded_total": self.click_writer.stats.events_written,
            "clicks_dropped_total": self.click_writer.stats.events_dropped,
            "webhook_deliveries_total": self.webhooks.deliverer.stats.delivered,
            "webhook_retries_total": self.webhooks.deliverer.stats.retried,
            "webhook_failures_total": self.webhooks.deliverer.stats.failed,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.bounded(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.web(scope, receive, send)

    async def _route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path.startswith(PIXEL_PREFIX):
            await self.pixel(scope, send)
        elif path.startswith(CLICK_PREFIX):
            await self.click(scope, send)
        else:
            await self.web(scope, receive, send)

    async def _apply_retention(self) -> None:
        """Drop raw detail past DEADPIXEL_RETENTION_DAYS once an hour (idempotent on every node)."""

        def purge() -> None:
            with self.engine.begin() as conn:
                dropped = purge_raw_detail(conn, self.settings.retention_days)
                dropped_clicks = purge_click_detail(conn, self.settings.retention_days)
            if dropped or dropped_clicks:
                log.info("retention: dropped raw detail of %d opens, %d clicks", dropped, dropped_clicks)

        while True:
            try:
                await asyncio.to_thread(purge)
            except Exception:
                log.exception("retention: purging old raw detail failed; trying again in an hour")
            await asyncio.sleep(3600)

    def _writer_upkeep(self, conn: Connection) -> None:
        """SQLite's upkeep from the pixel writer's thread between batches: nothing waits for its lock."""
        assert self.checkpointer is not None and self.writer_rollups is not None
        self.checkpointer.catch_up(conn)
        self.writer_rollups.catch_up(conn)

    async def _fold_rollups(self) -> None:
        """Keep the charts' rollups a few seconds behind the opens, so a page view finds little to fold."""
        while True:
            try:
                await asyncio.to_thread(rollups.catch_up, self.api_engine, self.engine, FOLD_CHUNK, FOLD_REST)
            except Exception:
                log.exception("rollups: folding new opens failed; trying again shortly")
            await asyncio.sleep(ROLLUP_INTERVAL)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        background: list[asyncio.Task[None]] = []
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Everything built so far (modules, the app, caches) lives as long as the worker: keep the
                # cyclic collector from walking it again and again, a full pass of which held the pixel up
                # for over 100 ms. What survives later (the enrichment caches) is frozen as it grows.
                freeze_long_lived(at_least=0)
                self.writer.start()
                self.click_writer.start()
                if self.checkpointer is not None:
                    self.checkpointer.start()
                self.webhooks.start()
                self.due.start()
                background.append(asyncio.create_task(self.metrics.run()))
                background.append(asyncio.create_task(keep_long_lived_frozen()))
                if self.writer_rollups is None:
                    background.append(asyncio.create_task(self._fold_rollups()))
                if self.settings.retention_days > 0:
                    background.append(asyncio.create_task(self._apply_retention()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Drain in a thread so requests still waiting on the last batches get their answers.
                await asyncio.gather(self.writer.aclose(), self.click_writer.aclose())
                await asyncio.to_thread(self.webhooks.stop)
                await asyncio.to_thread(self.due.stop)
                if self.checkpointer is not None:
                    await asyncio.to_thread(self.checkpointer.stop)
                for task in background:
                    task.cancel()
                self.metrics.remove()
                self.engine.dispose()
                self.api_engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> Deadpixel:
    settings = load_settings()
    configure_logs(settings.log_level, settings.log_format)
    app = Deadpixel(settings)
    log.info("worker ready on %s", "SQLite" if is_sqlite(app.engine) else "PostgreSQL")
    return app
