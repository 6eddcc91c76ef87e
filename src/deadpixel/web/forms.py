"""The dashboard's forms, parsed with bounds: a few fields, no files, small values.

Starlette's defaults (1000 fields and files, 1 MiB a part) suit uploads; no deadpixel form has more than a
handful of short fields, and the sign-in form is open to anyone. Over a bound, Starlette answers 400. The
body itself is bounded before this (deadpixel.server.bodies). The one form with files, a new campaign
(deadpixel.web.compose), reads with ``read_upload_form``: two files, and a part large enough for an HTML
template pasted in, above compose's own bounds so that those answer with their clearer message.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request

MAX_FIELDS = 20  # the largest form (a webhook: URL, every event kind, CSRF token) has under ten
MAX_PART = 8 * 1024  # bytes of one field's name or value
MAX_UPLOAD_FIELDS = 20
MAX_UPLOAD_FILES = 2  # the recipients' CSV and an HTML file
MAX_UPLOAD_PART = 1024 * 1024  # a pasted HTML template (deadpixel.web.compose bounds it at 512 KiB)


async def read_form(request: Request) -> FormData:
    """The request's form; every later call gets the same one (Starlette keeps it)."""
    return await request.form(max_files=0, max_fields=MAX_FIELDS, max_part_size=MAX_PART)


async def read_upload_form(request: Request) -> FormData:
    """The new-campaign form: files and long fields, still bounded; cached like ``read_form``."""
    return await request.form(
        max_files=MAX_UPLOAD_FILES, max_fields=MAX_UPLOAD_FIELDS, max_part_size=MAX_UPLOAD_PART
    )
