"""The two bounds uvicorn's ``HttpToolsProtocol`` lacks, kept on every connection: the size of a request head,
and the number of pipelined requests waiting on one connection.

uvicorn hands every byte it reads to httptools at once. httptools gathers a header's value across reads
without limit (each read copies what came before), so a head of tens of MiB costs seconds of the event loop
and every pixel waits; and every pipelined request in a read becomes a queued request-response cycle, and
reading resumes after each answer, so a client that pipelines without end grows the server without end.

So the bytes go to the parser a piece at a time, each piece ending at the next blank line (``CRLF CRLF``:
every request head ends with one, llhttp accepts no bare LF, and so does a chunked body), so that after each
piece the bytes of the head being read are known and at most one more request can have been queued:

- a head longer than ``MAX_HEAD`` is answered 431 and the connection closed (after the answers before it);
- with ``MAX_PIPELINED`` requests queued, the rest waits unparsed and the connection is not read until
  answers have gone out.

The pixel's protocol (deadpixel.track.protocol) keeps the same bounds itself; the protocol that keeps them
for everything else subclasses uvicorn's, so it lives in deadpixel.track.adapter with uvicorn's internals.
"""

from __future__ import annotations

MAX_HEAD = 16 * 1024  # bytes of request line and headers, for every route
MAX_PIPELINED = 64  # requests queued behind the one being answered, per connection
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
