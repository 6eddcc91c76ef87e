"""Paging by cursor: a list is fetched with one row more than its page, and ``next`` is the following page's
URL (the same query with ``cursor`` set to the last item's id), or None when no row is left."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

__all__ = ["next_page"]


def next_page(
    request: Request, items: list[dict[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Items were fetched with one extra row: if it is there, another page follows."""
    if len(items) <= limit:
        return items, None
    items = items[:limit]
    query = dict(request.query_params)
    query["cursor"] = str(items[-1]["id"])
    return items, f"{request.url.path}?{urlencode(query)}"
