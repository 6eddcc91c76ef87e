"""The SQLite WAL under steady writing: checkpointed beside the writer, and rewound so it stays short."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from deadpixel.store.db import WalCheckpointer, create_engine


def _write_steadily(url: str, seconds: float, checkpointer: WalCheckpointer) -> int:
    """Commit small batches back to back, as the pixel's writer does under load."""
    engine = create_engine(url, writer=True, background_checkpoints=True)
    rows = 0
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT, v TEXT)"))
        conn.execute(text("CREATE INDEX IF NOT EXISTS t_k ON t (k)"))
        conn.commit()
        while time.monotonic() < deadline:
            with conn.begin():
                conn.execute(
                    text("INSERT INTO t (k, v) VALUES (:k, :v)"),
                    [{"k": f"{(rows + n) * 7919 % 1000:04d}", "v": "x" * 200} for n in range(30)],
                )
            rows += 30
            checkpointer.catch_up(conn)
    engine.dispose()
    return rows


@pytest.mark.slow
def test_the_wal_starts_over_while_the_writer_never_pauses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    wal = tmp_path / "store.db-wal"
    create_engine(url).dispose()
    checkpointer = WalCheckpointer(url, interval=0.05, rewind_frames=256)
    checkpointer.start()
    sizes: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            sizes.append(wal.stat().st_size if wal.exists() else 0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rows = _write_steadily(url, 3.0, checkpointer)
    finally:
        stop.set()
        watcher.join()
        checkpointer.stop()

    assert checkpointer.rewinds > 0
    # Without rewinding, back-to-back commits grow the WAL by tens of megabytes a second for as long as they
    # last. With it, the log grows only until the first rewinds (how far depends on the disk's speed), then
    # keeps its size: over the last two of the three seconds it may grow by little more than a rewind's worth.
    after_one_second = sizes[len(sizes) // 3]
    growth = max(sizes) - after_one_second
    assert growth < 4 * 1024 * 1024, f"the WAL grew by {growth:,} bytes after the first second"
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == rows
    engine.dispose()
