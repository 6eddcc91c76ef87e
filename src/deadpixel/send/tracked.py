"""Compose a message for a stored message row: its pixel and its click tokens.

Composing touches no database, so a campaign can compose a whole chunk and then store the chunk's rows in a
few statements. The caller stores ``Composed.links`` in the transaction that commits before the message is
handed to SMTP, so a recipient can never click a link whose target is not stored yet.
"""

from __future__ import annotations

from typing import Unpack

from deadpixel.bounces.verp import envelope_sender
from deadpixel.config import Settings
from deadpixel.events import HIDDEN_LINK
from deadpixel.mail.compose import Composed, Letter, Rewrite, compose
from deadpixel.mail.utm import Utm
from deadpixel.security.tokens import TokenSigner


class Tracker:
    """Mints the pixel and click URLs of messages, from the settings' public base URL."""

    def __init__(self, settings: Settings, signer: TokenSigner, utm: Utm | None = None) -> None:
        self.settings = settings
        self.signer = signer
        self.utm = utm  # tags added to every tracked link's target (the stored URL), if given
        # Our own endpoints (unsubscribe pages, pixels) are never wrapped in a click redirect.
        self._own = settings.base_url + "/"

    def envelope_from(self, message_id: str | None) -> str | None:
        """The message's VERP envelope sender (DEADPIXEL_BOUNCE_DOMAIN), or None to keep the usual one."""
        return envelope_sender(self.signer, self.settings.bounce_domain, message_id)

    def pixel_url(self, message_id: str) -> str:
        return self.settings.pixel_url(self.signer.pixel_token(message_id))

    def hidden_url(self, message_id: str) -> str:
        """The URL of the message's hidden link, which only machines follow (``HIDDEN_LINK``)."""
        return self.settings.click_url(self.signer.click_token(message_id, HIDDEN_LINK))

    def rewriter(self, message_id: str) -> Rewrite:
        """Mints click URLs for one message's links, numbered in document order."""
        minted = 0

        def rewrite(url: str) -> str | None:
            nonlocal minted
            if url.startswith(self._own):
                return None
            token = self.signer.click_token(message_id, minted)
            minted += 1
            return self.settings.click_url(token)

        return rewrite

    def compose(self, message_id: str | None, **letter: Unpack[Letter]) -> Composed:
        """Compose with tracking for ``message_id``, or untouched when it is None."""
        if message_id is None:
            return compose(**letter, pixel_url=None, rewrite=None)
        composed = compose(
            **letter, pixel_url=self.pixel_url(message_id), rewrite=self.rewriter(message_id),
            hidden_url=self.hidden_url(message_id),
        )  # fmt: skip
        if self.utm is not None:  # the click redirects to the tagged URL; the mail shows only click URLs
            composed.links = [self.utm(url) for url in composed.links]
        return composed
