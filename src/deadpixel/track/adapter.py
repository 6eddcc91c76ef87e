"""The one module that touches uvicorn's internals, so that a uvicorn upgrade is checked in one place.

deadpixel serves through uvicorn (``uvicorn.run``, its public API), but the pixel's own protocol
(deadpixel.track.protocol) lives inside uvicorn's server: uvicorn makes it for every connection with the
arguments of its own protocols (``Config``, ``ServerState``), it joins ``ServerState.connections`` so that a
graceful stop reaches it, it answers with uvicorn's default headers, and it hands a connection that is not
the pixel's to uvicorn's ``HttpToolsProtocol``, subclassed here with deadpixel.track.bounded's limits. None
of that is uvicorn's public API, and any uvicorn release may change it; so it is all here, behind
``ServerLink`` and ``BoundedHttpToolsProtocol``, and nothing else in deadpixel imports from uvicorn's
private modules.

``SUPPORTED_UVICORN`` is the range of uvicorn releases the protocol tests passed on, and pyproject.toml pins
the same range. A release outside it (a distribution's package, a deliberate override) is not refused:
``check_uvicorn`` logs a warning at server start naming the version and the range. Refusing would stop a
server whose uvicorn got a security release that changes nothing here; the pin keeps pip from picking such
a version by accident, and tests/test_protocol.py fails on it until the range is widened after the
protocol and bounds tests pass.
"""

from __future__ import annotations

import asyncio
import logging
import re
from importlib.metadata import version as installed_version
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from deadpixel.track.bounded import MAX_HEAD, MAX_PIPELINED, TOO_LARGE

__all__ = [
    "SUPPORTED_UVICORN",
    "BoundedHttpToolsProtocol",
    "Config",
    "ServerLink",
    "ServerState",
    "check_uvicorn",
    "is_supported",
    "uvicorn_version",
]

log = logging.getLogger(__name__)

# uvicorn releases the protocol tests passed on: from the first (included) to the second (excluded).
# tests/test_protocol.py and tests/test_bounds.py passed on 0.36.0, 0.45.0, 0.54.0 and 0.55.0.
SUPPORTED_UVICORN = ("0.36", "0.56")
_BLANK = b"\r\n\r\n"


def uvicorn_version() -> str:
    """The installed uvicorn's version."""
    return installed_version("uvicorn")


def _release(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def is_supported(version: str) -> bool:
    """Whether ``version`` lies in ``SUPPORTED_UVICORN``."""
    low, high = (_release(bound) for bound in SUPPORTED_UVICORN)
    release = _release(version)
    return bool(release) and low <= release < high


def check_uvicorn(version: str | None = None) -> str | None:
    """At server start: a warning, logged and returned, when the installed uvicorn was never tested here."""
    found = uvicorn_version() if version is None else version
    if is_supported(found):
        return None
    low, high = SUPPORTED_UVICORN
    message = (
        f"uvicorn {found} is outside the versions deadpixel is tested with (>={low},<{high}); the pixel's "
        "protocol relies on uvicorn internals (deadpixel.track.adapter): install a tested version, e.g. "
        f"pip install 'uvicorn>={low},<{high}'"
    )
    log.warning("%s", message)
    return message


class ServerLink:
    """What uvicorn gives one connection's protocol, as the pixel's protocol uses it."""

    __slots__ = ("app", "app_state", "config", "loop", "state")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.state = server_state
        self.app_state = app_state
        self.loop = loop or asyncio.get_event_loop()
        self.app: object = config.loaded_app  # wrapped in middleware when uvicorn adds any

    @property
    def server(self) -> object:
        """The server this connection belongs to, the same object for all of its connections."""
        return self.state

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """uvicorn's headers for every answer (its ``date``): a new list when they change, once a second."""
        return self.state.default_headers

    @property
    def keep_alive_timeout(self) -> float:
        return float(self.config.timeout_keep_alive)

    def add(self, protocol: asyncio.Protocol) -> None:
        """Count ``protocol`` among the server's connections: a graceful stop calls its ``shutdown``."""
        self.state.connections.add(protocol)  # type: ignore[arg-type]

    def discard(self, protocol: asyncio.Protocol) -> None:
        self.state.connections.discard(protocol)

    def connections(self) -> list[object]:
        return list(self.state.connections)

    def hand_over(self, transport: asyncio.Transport, rest: bytes, resume_reading: bool) -> None:
        """From here on ``transport`` is uvicorn's (bounded) protocol's, starting with the bytes ``rest``."""
        successor = BoundedHttpToolsProtocol(self.config, self.state, self.app_state, self.loop)
        successor.connection_made(transport)
        transport.set_protocol(successor)
        if resume_reading:
            transport.resume_reading()
        if rest:
            successor.data_received(rest)


class _Flow(FlowControl):
    """uvicorn's flow control with one more reason not to read: bytes read and not yet parsed. uvicorn
    resumes reading whenever a request takes its body; while ``holding``, that waits for the parser."""

    holding = False

    def resume_reading(self) -> None:
        if not self.holding:
            super().resume_reading()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Made by ``deadpixel.track.protocol`` for every connection that is not (or no longer) the pixel's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unfed = b""  # read but not yet given to the parser
        self._at = 0  # where in _unfed the parser stopped
        self._tail = b""  # the last bytes fed, for a blank line split between two reads
        self._in_head = True  # between messages or inside a head
        self._head_bytes = 0
        self._refusing = False  # a head was too long: answer 431 once the requests before it are answered
        # What happened while the parser took the current piece.
        self._head_done = False
        self._message_done = False
        self._began_after_done = False
        self._body_bytes = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = self._flow = _Flow(transport)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        if self._at < len(self._unfed):
            self._unfed = self._unfed[self._at :] + data
        else:
            self._unfed = data
        self._at = 0
        self._feed()

    # The parser's callbacks, observed

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._message_done:
            self._began_after_done = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_done = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._message_done = True
        self._began_after_done = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next queued request, resumes reading
        if self.transport.is_closing():
            return
        if self._refusing:
            self._refuse_when_answered()
        else:
            self._feed()

    # Feeding

    def _feed(self) -> None:
        data, at = self._unfed, self._at
        while at < len(data) and not self._refusing:
            if self.parser is None or self.transport.is_closing():  # lost, or answered with a 400
                data, at = b"", 0
                break
            if len(self.pipeline) >= MAX_PIPELINED:
                self._flow.holding = True
                self._flow.pause_reading()
                break
            end = self._piece_end(data, at)
            piece = data[at:end]
            at = end
            self._head_done = self._message_done = self._began_after_done = False
            self._body_bytes = 0
            was_in_head = self._in_head
            super().data_received(piece)
            self._tail = piece[-3:] if len(piece) >= 3 else (self._tail + piece)[-3:]
            if self.parser is not None and self.parser.should_upgrade():
                data, at = b"", 0  # uvicorn serves no upgrades; the rest is not HTTP it reads
                break
            self._count_head(len(piece), was_in_head)
        if self._refusing or at >= len(data):
            data, at = b"", 0
        self._unfed, self._at = data, at
        if not data and self._flow.holding and not self._refusing:  # all parsed: read again
            self._flow.holding = False
            self._flow.resume_reading()

    def _piece_end(self, data: bytes, at: int) -> int:
        """Just past the next blank line from ``at``, or the end of what was read."""
        if at == 0 and self._tail:  # a blank line may have begun in the bytes fed before
            joined = self._tail + data[:3]
            found = joined.find(_BLANK)
            if found >= 0:
                return found + 4 - len(self._tail)
        found = data.find(_BLANK, max(0, at - 3))
        return len(data) if found < 0 else found + 4

    def _count_head(self, fed: int, was_in_head: bool) -> None:
        if not self._in_head:
            return
        if self._head_done:  # the piece ended with the head's blank line
            self._head_bytes = 0
        elif self._message_done:  # a body ended inside the piece; what follows it begins a head
            self._head_bytes = fed - self._body_bytes if self._began_after_done else 0
        elif was_in_head:
            self._head_bytes += fed
        if self._head_bytes > MAX_HEAD:
            self._refusing = True
            self._flow.holding = True  # nothing more is read from this connection
            self._flow.pause_reading()
            self._refuse_when_answered()

    def _refuse_when_answered(self) -> None:
        """The 431 goes out after the answers to the requests before the long head, in order."""
        if self.pipeline or (self.cycle is not None and not self.cycle.response_complete):
            return
        self.transport.write(TOO_LARGE)
        self.transport.close()
