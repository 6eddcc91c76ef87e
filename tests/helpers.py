"""Shared test helpers: make real pixels, drive real load."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from deadpixel.config import Settings
from deadpixel.keys import load_or_create_keys
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import opens
from deadpixel.tokens import TokenSigner


def make_pixels(settings: Settings, n: int, campaign: str | None = None) -> list[tuple[str, str]]:
    """Create ``n`` messages; return (message_id, pixel path) pairs."""
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=f"r{i}@example.com", campaign=campaign) for i in range(n)]
    engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return [(mid, f"/o/{signer.pixel_token(mid)}.gif") for mid in ids]


def count_opens(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(opens)).scalar_one()
    engine.dispose()
    return int(n)


def stored_user_agents(settings: Settings) -> list[str]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        agents = list(conn.execute(select(opens.c.user_agent)).scalars())
    engine.dispose()
    return agents


async def _fetch(
    base_urls: list[str], paths: list[str], concurrency: int, agent_prefix: str
) -> list[tuple[str, int]]:
    """GET every path once with a unique user agent; return (user agent, status or -1 on error)."""
    results: list[tuple[str, int]] = []
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, path in enumerate(paths):
        queue.put_nowait((i, path))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker(w: int) -> None:
            base = base_urls[w % len(base_urls)]
            while not queue.empty():
                i, path = queue.get_nowait()
                agent = f"{agent_prefix}-{i}"
                try:
                    response = await client.get(base + path, headers={"user-agent": agent})
                    results.append((agent, response.status_code))
                except httpx.HTTPError:
                    results.append((agent, -1))

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return results


def fetch_all(
    base_urls: list[str] | str, paths: list[str], concurrency: int = 32, agent_prefix: str = "load"
) -> list[tuple[str, int]]:
    urls = [base_urls] if isinstance(base_urls, str) else base_urls
    return asyncio.run(_fetch(urls, paths, concurrency, agent_prefix))
