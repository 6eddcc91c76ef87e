"""The ``Content-Disposition`` of a download whose name comes from data (a campaign name in a CSV export).

A campaign can be named anything, line breaks and quotes included, and a header may hold neither: the name
goes out twice (RFC 6266). ``filename`` is a plain-ASCII stand-in with every character a header or a file
system could take badly (controls, quotes, backslashes, slashes, ``;``, ``%``, non-ASCII) turned into ``_``;
``filename*`` (RFC 8187, formerly 5987) is the real name, UTF-8 and percent-encoded, with only its control
characters and path separators replaced and surrounding white space removed. Browsers use ``filename*``
and fall back to ``filename``.
"""

from __future__ import annotations

from urllib.parse import quote

# RFC 8187 attr-char besides letters and digits: what may stand unencoded in filename*.
_ATTR_CHAR = "!#$&+-.^_`|~"
_UNSAFE_ASCII = frozenset('"\\/;%')
FALLBACK = "download"


def _plain(name: str) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in _UNSAFE_ASCII else "_" for c in name)


def _real(name: str) -> str:
    return "".join("_" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "/\\" else c for c in name)


def attachment(filename: str) -> str:
    """``attachment; filename="..."`` and, when the stand-in is not the real name, ``filename*``."""
    plain = _plain(filename).strip(" .") or FALLBACK
    header = f'attachment; filename="{plain}"'
    real = _real(filename).strip()
    if real != plain and real.strip("."):
        encoded = quote(real.encode("utf-8", "replace"), safe=_ATTR_CHAR)
        header += f"; filename*=UTF-8''{encoded}"
    return header
