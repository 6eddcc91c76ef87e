"""DEADPIXEL_OPEN_CAP: a flood on one genuine pixel is answered, counted, and stored only up to the cap."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as budget
from hypothesis import strategies as st

from deadpixel.config import Settings
from deadpixel.events import OpenEvent
from deadpixel.track.cap import OpenCap

from .conftest import Server
from .helpers import count_opens, deadpixel, fetch_all, make_pixels


def opens_at(*seconds: float, message: str = "m") -> list[OpenEvent]:
    return [OpenEvent(message, at, "192.0.2.1", "UA", "GET") for at in seconds]


def test_the_cap_is_per_message_and_per_minute() -> None:
    cap = OpenCap(2)
    kept, capped = cap.split(opens_at(60.0, 61.0, 62.0, 63.0) + opens_at(64.0, message="other"))
    assert [(e.message_id, e.at) for e in kept] == [("m", 60.0), ("m", 61.0), ("other", 64.0)]
    assert capped == {"m": 2}
    kept, capped = cap.split(opens_at(119.0, 120.0, 121.0, 122.0))  # a new minute starts at 120
    assert [e.at for e in kept] == [120.0, 121.0]
    assert capped == {"m": 2}
    assert cap.capped_total == 4


@budget(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(1, 5),
    batches=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 300, allow_nan=False)), max_size=20),
        max_size=8,
    ),
)
def test_nothing_is_lost_and_no_minute_stores_more_than_the_cap(
    per_minute: int, batches: list[list[tuple[str, float]]]
) -> None:
    cap = OpenCap(per_minute)
    stored: dict[tuple[str, int], int] = {}
    minute = -1  # the cap's minute: the latest seen; an open from an earlier one counts in it
    for batch in batches:
        batch.sort(key=lambda pair: pair[1])  # a batch holds opens in about arrival order
        events = [OpenEvent(mid, at, None, None, "GET") for mid, at in batch]
        kept, capped = cap.split(events)
        assert len(kept) + sum(capped.values()) == len(events)
        kept_ids = {id(event) for event in kept}
        for event in events:
            minute = max(minute, int(event.at // 60))
            if id(event) in kept_ids:
                stored[(event.message_id, minute)] = stored.get((event.message_id, minute), 0) + 1
    assert all(count <= per_minute for count in stored.values())


def test_a_cap_of_zero_is_no_cap_object() -> None:
    with pytest.raises(ValueError):
        OpenCap(0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("cap", "expect_stored"), [("5", (5, 10)), ("0", (40, 40))])
def test_a_flood_on_one_pixel_is_answered_and_stored_up_to_the_cap(
    server_factory: type[Server],
    env: dict[str, str],
    settings: Settings,
    cap: str,
    expect_stored: tuple[int, int],
) -> None:
    server = server_factory(env={**env, "DEADPIXEL_OPEN_CAP": cap}).start()
    (_, path), (_, calm) = make_pixels(settings, 2, campaign="flood")
    answers = fetch_all(server.url, [path] * 40 + [calm], concurrency=8)
    assert [status for _, status in answers] == [200] * 41
    server.stop()
    stored = count_opens(settings) - 1  # the calm pixel's one open is stored whatever the cap
    low, high = expect_stored
    assert low <= stored <= high  # two minutes at most if the flood straddles a minute boundary
    report = json.loads(deadpixel("report", "flood", "--json", check=True).stdout)
    assert report["total_opens"] == stored + 1
    assert report["capped_opens"] == 40 - stored
    assert report["unique_opens"] == 2
