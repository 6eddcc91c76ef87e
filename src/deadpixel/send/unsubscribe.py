"""What campaign mail carries so that people can leave: RFC 2369 and RFC 8058 headers, and a template link.

``List-Unsubscribe`` names the HTTPS page of this recipient (``/u/<token>``); ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` tells mail providers (Gmail, Yahoo, Apple) that a POST to it unsubscribes
without any further step. Templates get the same URL as ``{{ unsubscribe_url }}`` for a footer link.
"""

from __future__ import annotations

from deadpixel.config import Settings
from deadpixel.security.tokens import TokenSigner


def unsubscribe_extras(
    settings: Settings, signer: TokenSigner, unsubscribe_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    url = settings.unsubscribe_url(signer.unsubscribe_token(unsubscribe_id))
    return unsubscribe_headers(url), {"unsubscribe_url": url}


def unsubscribe_headers(url: str) -> dict[str, str]:
    """The two headers every campaign message carries, for the recipient's unsubscribe page ``url``."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def https_warning(settings: Settings) -> str | None:
    """RFC 8058 expects an HTTPS URL; mail providers may ignore one-click unsubscribe over plain HTTP."""
    return plain_http_unsubscribe(settings.base_url)


def plain_http_unsubscribe(base_url: str) -> str | None:
    """The warning for a base URL that is not HTTPS, or None."""
    if base_url.startswith("https://"):
        return None
    return (
        f"Warning: DEADPIXEL_BASE_URL is {base_url}, not https://: mail providers expect one-click"
        " unsubscribe links (RFC 8058) over HTTPS and may not offer them. Both headers are sent anyway."
    )
