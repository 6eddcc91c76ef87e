"""Security primitives the other layers share: signed tokens and their keys, private file modes, the
webhook address allowlist and the link URLs a redirect may carry.

Each imports nothing of deadpixel but ``errors`` (and each other), so the store, the hot path and the
settings can all use them.
"""
