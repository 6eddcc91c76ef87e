"""The 43-byte transparent GIF and the headers that stop every cache from keeping it."""

from __future__ import annotations

import base64

# GIF89a, 1x1, one transparent palette entry.
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")

HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, private, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
