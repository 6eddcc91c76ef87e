"""One TLS context for the process's outgoing HTTPS (webhooks and notifications): each new context loads and
parses the whole CA bundle again, about 35 ms of CPU, and the server used to make three at start-up."""

from __future__ import annotations

import functools
import os
import ssl

import httpx


def client_context() -> ssl.SSLContext:
    """The context every outgoing HTTPS client shares. It trusts what httpx trusts by default (certifi's
    bundle), or the CAs named in ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, so an operator can trust a private CA;
    a change of those variables gets a context of its own."""
    return _context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """Built once per CA setting (the arguments are the cache key; httpx reads the variables itself)."""
    del cert_file, cert_dir
    return httpx.create_ssl_context()
