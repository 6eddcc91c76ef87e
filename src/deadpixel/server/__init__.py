"""The HTTP server's process: ``start`` prepares the store and runs uvicorn's workers, ``app`` is each
worker's ASGI app, and the pieces only long-running processes need (``logs``, ``metrics``, ``heap``,
``bodies``).
"""
