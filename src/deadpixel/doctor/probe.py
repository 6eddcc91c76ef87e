"""GET requests to the base URL, each on a fresh connection, with a timeout and one-line errors.

The checks of the base URL share one ``Probe``: once the server has been found unreachable, the others say
so at once instead of each waiting out its own timeout.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from deadpixel.errors import DeadpixelError

MAX_BODY = 64 * 1024


class ProbeError(DeadpixelError):
    """The base URL could not be asked (no connection, no TLS, no HTTP answer); the message is one line."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    sent_at: float  # time.time() as the request left
    received_at: float  # and as the answer's head arrived


class Probe:
    def __init__(self, base_url: str, timeout: float) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.down: ProbeError | None = None  # set once a request could not be made at all
        self._seen: dict[tuple[str, tuple[tuple[str, str], ...]], Response] = {}

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """GET ``path`` under the base URL; the same request twice is answered from memory."""
        if self.down is not None:
            raise self.down
        key = (path, tuple(sorted((headers or {}).items())))
        if key not in self._seen:
            try:
                self._seen[key] = self._get(path, headers or {})
            except ProbeError as exc:
                self.down = exc
                raise
        return self._seen[key]

    def _connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _get(self, path: str, headers: dict[str, str]) -> Response:
        conn = self._connection()
        where = f"{self.base_url}{path}"
        try:
            sent_at = time.time()
            conn.request("GET", self.prefix + path, headers={"User-Agent": "deadpixel-doctor", **headers})
            answer = conn.getresponse()
            received_at = time.time()
            body = answer.read(MAX_BODY)
            found = {name.lower(): value for name, value in answer.getheaders()}
            return Response(answer.status, found, body, sent_at, received_at)
        except ssl.SSLCertVerificationError as exc:
            raise ProbeError(f"{where}: TLS certificate not valid ({exc.verify_message})") from None
        except ssl.SSLError as exc:
            raise ProbeError(f"{where}: TLS handshake failed ({exc.reason or exc})") from None
        except socket.gaierror:
            raise ProbeError(f"{where}: cannot resolve the name {self.host}") from None
        except TimeoutError:
            raise ProbeError(f"{where}: no answer within {self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise ProbeError(f"{where}: connection refused (nothing listens on port {self.port})") from None
        except http.client.HTTPException as exc:
            raise ProbeError(f"{where}: not an HTTP answer ({type(exc).__name__})") from None
        except OSError as exc:
            raise ProbeError(f"{where}: {exc.strerror or exc}") from None
        finally:
            conn.close()
