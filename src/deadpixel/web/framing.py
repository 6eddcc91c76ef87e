"""No page of deadpixel may be shown inside another site's frame (clickjacking: a hidden sign-in, unsubscribe
or settings form under a decoy). Every response of the web app says so twice: ``frame-ancestors 'none'`` in
its Content-Security-Policy, for current browsers, and ``X-Frame-Options: DENY``, for older ones. A page
with a policy of its own keeps it, with the directive added when it lacks one.
"""

from __future__ import annotations

from typing import Any

FRAME_ANCESTORS = b"frame-ancestors 'none'"


def _with_frame_ancestors(policy: bytes) -> bytes:
    if b"frame-ancestors" in policy.lower():
        return policy
    return policy.rstrip(b"; ") + b"; " + FRAME_ANCESTORS if policy.strip() else FRAME_ANCESTORS


class NoFraming:
    """Pure ASGI middleware, so streamed answers (the live feed, CSV exports) pass through unbuffered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def framed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-frame-options"]
                policies = [v for k, v in headers if k.lower() == b"content-security-policy"]
                headers = [(k, v) for k, v in headers if k.lower() != b"content-security-policy"]
                headers += [(b"content-security-policy", _with_frame_ancestors(v)) for v in policies or [b""]]
                headers.append((b"x-frame-options", b"DENY"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, framed)
