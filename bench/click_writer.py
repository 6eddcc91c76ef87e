"""What the click rules cost the click writer: batches of clicks written as the writer writes them.

``python bench/click_writer.py`` makes a fresh SQLite store with 200 sent messages and writes 300 batches of
20 clicks from scattered addresses (the first 20 batches warm up and are not timed), with enrichment on, then
prints the time per click and per batch and the share of the click rules' lookups: the earlier clicks of the
batch's messages from the batch's addresses, which messages a person opened, and judging the batch
(enrichment included, which every version does). Run it against an older checkout (``PYTHONPATH=OLD/src``)
for the before figure; the lookups are then absent.
"""

from __future__ import annotations

import pathlib
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import ClickEvent
from deadpixel.store import clicks as store_clicks
from deadpixel.store import migrate
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
BATCHES, WARM_UP, PER_BATCH = 300, 20, 20
spent: dict[str, float] = {}


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    return run


def main() -> None:
    folder = pathlib.Path(tempfile.mkdtemp())
    settings = Settings(data_dir=folder, database_url=f"sqlite:///{folder}/bench.db")
    engine = create_engine(settings.database_url, writer=True)
    migrate.upgrade(engine)
    opens = OpenClassifier.from_settings(settings)
    classifier = getattr(opens, "clicks", opens)  # the click rules where they have their own classifier
    for name in ("earlier_clicks", "opened_by_someone"):
        if hasattr(store_clicks, name):
            setattr(store_clicks, name, timed(name, getattr(store_clicks, name)))
    if hasattr(classifier, "click_rows"):
        classifier.click_rows = timed("rules", classifier.click_rows)  # type: ignore[method-assign]
    now = time.time()
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=f"r{n}@example.com", sent_at=now - 3600) for n in range(200)]
    rng = random.Random(1)
    batches = [
        [
            ClickEvent(rng.choice(ids), rng.randrange(5), now + b * 0.05 + k * 0.001,
                       f"{rng.randrange(11, 99)}.{rng.randrange(256)}.{rng.randrange(256)}.9", CHROME, "GET")
            for k in range(PER_BATCH)
        ]
        for b in range(BATCHES)
    ]  # fmt: skip
    with engine.connect() as conn:
        for number, batch in enumerate(batches):
            if number == WARM_UP:
                spent.clear()
                started = time.perf_counter()
            with conn.begin():
                store_clicks.write_clicks(conn, batch, classifier)
        took = time.perf_counter() - started
    timed_batches = BATCHES - WARM_UP
    print(f"{took / (timed_batches * PER_BATCH) * 1e6:.0f} µs per click, {took / timed_batches * 1e3:.2f} ms "
          f"per batch of {PER_BATCH}")  # fmt: skip
    for name, seconds in spent.items():
        print(f"  {name}: {seconds / timed_batches * 1e3:.2f} ms per batch")


if __name__ == "__main__":
    main()
