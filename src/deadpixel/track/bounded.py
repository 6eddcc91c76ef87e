"""uvicorn's ``HttpToolsProtocol`` with the two bounds it lacks: the size of a request head, and the number of
pipelined requests waiting on one connection.

uvicorn hands every byte it reads to httptools at once. httptools gathers a header's value across reads
without limit (each read copies what came before), so a head of tens of MiB costs seconds of the event loop
and every pixel waits; and every pipelined request in a read becomes a queued request-response cycle, and
reading resumes after each answer, so a client that pipelines without end grows the server without end.

Here the bytes go to the parser a piece at a time, each piece ending at the next blank line (``CRLF CRLF``:
every request head ends with one, llhttp accepts no bare LF, and so does a chunked body), so that after each
piece the bytes of the head being read are known and at most one more request can have been queued:

- a head longer than ``MAX_HEAD`` is answered 431 and the connection closed (after the answers before it);
- with ``MAX_PIPELINED`` requests queued, the rest waits unparsed and the connection is not read until
  answers have gone out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 16 * 1024  # bytes of request line and headers, for every route (the pixel's protocol uses it too)
MAX_PIPELINED = 64  # requests queued behind the one being answered, per connection
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BLANK = b"\r\n\r\n"


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
