"""HTTP/1.1 for ``deadpixel serve``: pixels answered on the connection itself, everything else by uvicorn.

Behind ASGI, a pixel's answer cost the HTTP server more CPU than everything deadpixel does for it: on one
core, Granian answering a bare GIF through ASGI took about 17 µs a request, its threads handing each request
to the event loop and back, while this protocol on uvloop takes about 7. So ``GET`` and ``HEAD`` of
``/o/...`` never become ASGI requests: each request head is parsed with httptools (the parser uvicorn uses),
the open is queued with the writer, and the prebuilt answer is written once its batch is committed.

The first request that is anything else (the dashboard, the API, a click, a request with a body, an upgrade,
bytes that are not HTTP) hands the connection, from that request's first byte, to uvicorn's own
``HttpToolsProtocol`` for good (with deadpixel.track.bounded's limits on heads and pipelining), once the
pixels before it are answered. uvicorn then answers it as it answers any request, a 400 for a malformed one
included. Answers leave in the order their requests came (HTTP/1.1
pipelining): a forged token's GIF, which needs no commit, waits behind a genuine one's.

Whatever this protocol needs of uvicorn's internals (its server state, the hand-over) goes through
deadpixel.track.adapter, the one module that imports them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from typing import Any, cast

import httptools

from deadpixel.track import pixel
from deadpixel.track.adapter import Config, ServerLink, ServerState
from deadpixel.track.app import PIXEL_PREFIX, PixelEndpoint
from deadpixel.track.bounded import MAX_HEAD, MAX_PIPELINED, TOO_LARGE

log = logging.getLogger(__name__)

MAX_WAITING = MAX_PIPELINED  # answers waiting on one connection before it stops reading
_STARTS = (b"GET " + PIXEL_PREFIX.encode(), b"HEAD " + PIXEL_PREFIX.encode())

Answer = tuple["asyncio.Future[None] | None", bytes]


def may_be_pixel(head: bytes) -> bool:
    """Whether the bytes a request starts with could still be a pixel request."""
    if head.startswith(_STARTS):
        return True
    return len(head) < len(_STARTS[1]) and any(start.startswith(head) for start in _STARTS)


class Answers:
    """The pixel's answers as bytes, rebuilt when uvicorn's default headers change (its ``date``, once a
    second)."""

    def __init__(self) -> None:
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._built: dict[tuple[bool, bool], bytes] = {}

    def get(self, defaults: list[tuple[bytes, bytes]], with_body: bool, keep_alive: bool) -> bytes:
        if defaults is not self._defaults:
            self._defaults = defaults
            self._built = {
                (body, alive): self._build(defaults, body, alive)
                for body in (True, False)
                for alive in (True, False)
            }
        return self._built[with_body, keep_alive]

    @staticmethod
    def _build(defaults: list[tuple[bytes, bytes]], with_body: bool, keep_alive: bool) -> bytes:
        headers = [*defaults, *pixel.HEADERS] + ([] if keep_alive else [(b"connection", b"close")])
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return head + b"\r\n" + (pixel.GIF if with_body else b"")


_answers = Answers()
_sweeps: weakref.WeakKeyDictionary[object, asyncio.TimerHandle] = weakref.WeakKeyDictionary()


class PixelProtocol(asyncio.Protocol):
    """One per connection, made by uvicorn (``Config(http=...)``) with the arguments of its own protocols."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._server = ServerLink(config, server_state, app_state, _loop)
        endpoint = getattr(self._server.app, "pixel", None)  # absent when uvicorn wraps the app
        self._pixel = endpoint if isinstance(endpoint, PixelEndpoint) else None
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._buffer = b""
        self._waiting: deque[Answer] = deque()
        self._handing_over: bytes | None = None  # the rest of the stream, once it is uvicorn's
        self._closing = False  # close once every answer is written
        self._reading = True
        self._writable = True
        self._active = False  # data came since the last idle sweep
        # The request head being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._keep_alive = True

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses
        if self._pixel is None:
            self._switch(b"")
            return
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) else None
        self._server.add(self)
        self._sweep_idle_connections()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.discard(self)
        self._closing = True
        self._waiting.clear()  # their opens are committed all the same; nobody is left to answer

    def data_received(self, data: bytes) -> None:
        self._active = True
        if self._handing_over is not None:
            self._handing_over += data
            return
        if self._closing:
            return
        stream = self._buffer + data if self._buffer else data
        start = 0
        while True:
            if not may_be_pixel(stream[start : start + len(_STARTS[1])]):
                self._hand_over(stream[start:])
                return
            end = stream.find(b"\r\n\r\n", start)
            if end < 0:
                break
            end += 4
            if not self._answer(stream[start:end]):
                self._hand_over(stream[start:])
                return
            start = end
            if self._closing:  # the request asked to close: whatever follows it is not read
                self._buffer = b""
                return
            if start == len(stream):
                break
        self._buffer = stream[start:]
        if len(self._buffer) > MAX_HEAD:
            self._buffer = b""
            self._queue(None, TOO_LARGE)
            self._close_when_answered()

    def pause_writing(self) -> None:
        self._writable = False
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writable = True
        self._resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful stop: answer what is waiting, then close."""
        self._close_when_answered()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._complete = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message is complete

    def on_message_complete(self) -> None:
        self._complete = True

    # The pixel

    def _answer(self, head: bytes) -> bool:
        """Answer one complete request head; False when it is not a plain pixel request."""
        parser = self._parser
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return False
        if not self._complete:  # a body follows
            return False
        path = self._url.split(b"?", 1)[0]
        if b"%" in path or b"#" in path or not path.isascii():
            return False
        method = parser.get_method().decode("ascii")
        keep_alive = self._keep_alive
        assert self._pixel is not None
        try:
            committed = self._pixel.record(path.decode("ascii"), method, self._peer, self._headers)
        except Exception:  # a bug must not cost the client its answer
            log.exception("recording a pixel request failed")
            committed = None
        answer = _answers.get(self._server.default_headers, method == "GET", keep_alive)
        self._queue(committed, answer)
        if not keep_alive:
            self._close_when_answered()
        return True

    def _queue(self, committed: asyncio.Future[None] | None, answer: bytes) -> None:
        if committed is None and not self._waiting:
            self._write(answer)
            return
        self._waiting.append((committed, answer))
        if committed is not None:
            committed.add_done_callback(self._flush)
        if len(self._waiting) >= MAX_WAITING:
            self._pause_reading()

    def _flush(self, _: object = None) -> None:
        """Write the answers whose opens are committed, in order, up to the first that is not."""
        waiting = self._waiting
        while waiting:
            committed, answer = waiting[0]
            if committed is not None and not committed.done():
                break
            waiting.popleft()
            self._write(answer)
        if waiting:
            if len(waiting) < MAX_WAITING:
                self._resume_reading()
            return
        if self._closing:
            self._close()
        elif self._handing_over is not None:
            self._switch(self._handing_over)
        else:
            self._resume_reading()

    def _write(self, answer: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)

    def _close_when_answered(self) -> None:
        self._closing = True
        if not self._waiting:
            self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # Everything else

    def _hand_over(self, rest: bytes) -> None:
        self._buffer = b""
        if self._waiting:
            self._handing_over = rest
            self._pause_reading()
        else:
            self._switch(rest)

    def _switch(self, rest: bytes) -> None:
        """From here on the connection is uvicorn's."""
        transport = self._transport
        assert transport is not None
        self._server.discard(self)
        self._handing_over = None
        self._closing = True
        self._server.hand_over(transport, rest, resume_reading=not self._reading)

    def _pause_reading(self) -> None:
        if self._reading and self._transport is not None and not self._transport.is_closing():
            self._reading = False
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        blocked = not self._writable or self._handing_over is not None or len(self._waiting) >= MAX_WAITING
        if not self._reading and not blocked and self._transport is not None and not self._closing:
            self._reading = True
            self._transport.resume_reading()

    # Idle connections

    def _sweep_idle_connections(self) -> None:
        """One timer per server, not one per request: every ``timeout_keep_alive`` seconds it closes this
        protocol's connections that received nothing since the sweep before and wait for nothing."""
        link = self._server
        state, loop = link.server, link.loop
        if state in _sweeps:
            return
        interval = max(1.0, link.keep_alive_timeout)

        def sweep() -> None:
            ours = [conn for conn in link.connections() if isinstance(conn, PixelProtocol)]
            for conn in ours:
                conn._idle_check()
            if ours:
                _sweeps[state] = loop.call_later(interval, sweep)
            else:
                _sweeps.pop(state, None)

        _sweeps[state] = loop.call_later(interval, sweep)

    def _idle_check(self) -> None:
        if self._active:
            self._active = False
        elif not self._waiting and self._handing_over is None:
            self._close()
