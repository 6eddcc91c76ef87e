"""Webhooks: POST each open and click, signed, to the URLs a user configured, from the outbox in the store.

``registry`` adds, lists and removes webhooks; ``signing`` makes and checks the ``Deadpixel-Signature``
header; ``deliver`` claims due rows of the outbox (written by ``deadpixel.store.outbox``) and sends them,
with retries and exponential backoff. See docs/webhooks.md.
"""
