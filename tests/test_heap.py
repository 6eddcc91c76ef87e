"""Long-lived objects are frozen out of the cyclic collector's walks once there are enough of them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from deadpixel.server.heap import freeze_long_lived


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_oldest_generation_is_frozen_once_it_is_large_enough(unfrozen: None) -> None:
    gc.collect()
    baseline = len(gc.get_objects(generation=2))
    assert not freeze_long_lived(at_least=baseline + 5_000)
    assert gc.get_freeze_count() == 0

    cache = {n: [n] for n in range(6_000)}  # lists are tracked by the collector, as cache entries are
    gc.collect()  # survivors move to the oldest generation
    assert freeze_long_lived(at_least=baseline + 5_000)
    assert gc.get_freeze_count() >= len(cache)
    assert len(gc.get_objects(generation=2)) < 1_000  # what a full collection walks now


def test_garbage_is_collected_before_it_could_be_frozen(unfrozen: None) -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

    collected: list[str] = []
    doomed = Node()
    gc.collect()
    weakref.finalize(doomed, collected.append, "freed")
    del doomed
    assert freeze_long_lived(at_least=0)
    assert collected == ["freed"]
