"""Keeping the cyclic garbage collector off what lives as long as the worker.

A full collection walks every tracked object, holding the interpreter (and so every pixel) meanwhile. Most
of a worker's objects live as long as it does: modules and the app, built before it serves, and then the
caches that fill as new readers arrive (addresses, user agents, verdicts). CPython runs a full collection
about every ten collections of the middle generation, twice a second under load; with 5,000 readers'
enrichment cached, each walked 23,000 objects for 8 ms (0.7 µs of every answer), and in a long run with
caches of tens of thousands of readers such a pass held the pixel up far longer.

So what has survived into the oldest generation is frozen (``gc.freeze``): the collector no longer walks
it. Just before, a full collection frees whatever is already garbage. What is frozen is never collected
as cyclic garbage later; it is freed by reference counting like any object, which is how cache entries
go. Freezing happens when the oldest generation has grown by ``FREEZE_FROM`` objects, so it stops once the
caches are full.
"""

from __future__ import annotations

import asyncio
import gc

FREEZE_FROM = 10_000  # objects in the oldest generation worth freezing
CHECK_EVERY = 5.0  # seconds


def freeze_long_lived(at_least: int = FREEZE_FROM) -> bool:
    """Collect, then freeze every object alive, once the oldest generation holds ``at_least`` objects."""
    if len(gc.get_objects(generation=2)) < at_least:
        return False
    gc.collect()
    gc.freeze()
    return True


async def keep_long_lived_frozen(interval: float = CHECK_EVERY) -> None:
    """Check every ``interval`` seconds, for as long as the worker serves."""
    while True:
        await asyncio.sleep(interval)
        freeze_long_lived()
