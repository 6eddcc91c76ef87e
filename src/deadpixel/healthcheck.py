"""``python3 -m deadpixel.healthcheck``: exit 0 when the server on this machine answers ``/healthz``.

The container image's HEALTHCHECK runs it, so the image needs no curl or wget; it asks the port the settings
name, and it never goes through an HTTP proxy from the environment.
"""

from __future__ import annotations

import sys
import urllib.request

from deadpixel.config import ConfigError, load_settings

TIMEOUT = 4.0  # seconds; the image's HEALTHCHECK gives the whole command 5


def healthz_url(host: str, port: int) -> str:
    """The address a server listening on ``host`` answers on from this machine."""
    local = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in local:
        local = f"[{local}]"
    return f"http://{local}:{port}/healthz"


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"unhealthy: bad setting: {exc}", file=sys.stderr)
        return 1
    url = healthz_url(settings.host, settings.port)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as response:
            status = response.status
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
