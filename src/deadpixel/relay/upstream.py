"""The real SMTP server behind the relay: a few kept-open connections, used from worker threads.

smtplib blocks, so each copy goes out on a worker thread. A small pool of connections lets the messages of
several clients travel side by side and spares every later message the connect, TLS and AUTH round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from deadpixel.mail.smtp import Refused, SMTPSender, SMTPSettings


class Upstream:
    def __init__(self, settings: SMTPSettings, connections: int = 4) -> None:
        self._senders = [SMTPSender(settings) for _ in range(connections)]
        self._idle: asyncio.Queue[SMTPSender] = asyncio.Queue()
        for sender in self._senders:
            self._idle.put_nowait(sender)
        self._threads = ThreadPoolExecutor(connections, thread_name_prefix="deadpixel-upstream")

    async def send(
        self, data: bytes, *, envelope_from: str, recipients: Sequence[str], smtputf8: bool
    ) -> Refused:
        """Hand one copy over; raises DeliveryError when nobody got it (see SMTPSender.send_bytes)."""
        sender = await self._idle.get()
        try:
            send = partial(
                sender.send_bytes, data, envelope_from=envelope_from, recipients=recipients, smtputf8=smtputf8
            )
            return await asyncio.get_running_loop().run_in_executor(self._threads, send)
        finally:
            self._idle.put_nowait(sender)

    def close(self) -> None:
        """Say QUIT on every open connection."""
        for sender in self._senders:
            self._threads.submit(sender.close)
        self._threads.shutdown(wait=True)
