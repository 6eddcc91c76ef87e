"""The life of an SMTP server deadpixel runs itself (the relay, the bounce listener): its listening socket,
and serving until SIGINT or SIGTERM.

Kept here, below both, so that the two servers start, report their port and stop the same way without
either importing the other.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Protocol


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def listen(
    protocol: Callable[[], asyncio.BaseProtocol], host: str, port: int
) -> tuple[asyncio.Server, int]:
    """A server listening on ``host``:``port``, and the port it got (the one the system chose for port 0)."""
    server = await asyncio.get_running_loop().create_server(protocol, host, port)
    return server, server.sockets[0].getsockname()[1] if port == 0 else port


async def close(server: asyncio.Server | None) -> None:
    """Stop listening and wait until the connections being served are closed."""
    if server is not None:
        server.close()
        await server.wait_closed()


def serve_until_signal(make: Callable[[], Service]) -> None:
    """Make the service in the event loop, start it, serve until SIGINT or SIGTERM, then stop it."""

    async def main() -> None:
        service = make()
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(main())
