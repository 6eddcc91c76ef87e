"""A pixel made by hand: the message row, its pixel URL and the HTML to paste into mail sent elsewhere.

Shared by ``deadpixel pixel new`` and ``POST /api/v1/messages``, so both answer with the same fields.
"""

from __future__ import annotations

import html
from typing import Any

from sqlalchemy import Connection

from deadpixel.config import Settings
from deadpixel.security.tokens import TokenSigner
from deadpixel.store.messages import create_message
from deadpixel.store.notices import EACH


def img_tag(url: str) -> str:
    return (
        f'<img src="{html.escape(url)}" width="1" height="1" alt="" border="0" '
        'style="border:0;width:1px;height:1px">'
    )


def new_pixel(
    conn: Connection,
    settings: Settings,
    signer: TokenSigner,
    *,
    recipient: str,
    subject: str | None,
    campaign: str | None,
    notify: bool = False,
) -> dict[str, Any]:
    """``notify``: a read notice on the first human open; without it, the campaign's mode applies."""
    mode = EACH if notify else None
    message_id = create_message(conn, recipient=recipient, subject=subject, campaign=campaign, notify=mode)
    url = settings.pixel_url(signer.pixel_token(message_id))
    return {
        "message_id": message_id,
        "to": recipient,
        "subject": subject,
        "campaign": campaign,
        "url": url,
        "html": img_tag(url),
    }
