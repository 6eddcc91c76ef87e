"""``deadpixel backup`` against a real store, taken while a real server is recording opens."""

from __future__ import annotations

import json
import sqlite3
import stat
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deadpixel.config import Settings
from deadpixel.store.backup import BackupError, backup
from deadpixel.store.migrate import SCHEMA_REVISION

from .conftest import Server
from .helpers import Ran, count_opens, deadpixel, fetch_all, make_pixels


def run_backup(into: Path) -> Ran:
    return deadpixel("backup", str(into))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_a_backup_taken_under_load_is_consistent_private_and_restorable(
    server: Server, settings: Settings, tmp_path: Path
) -> None:
    pixels = make_pixels(settings, 50)
    paths = [path for _, path in pixels] * 40
    results: list[tuple[str, int]] = []
    load = threading.Thread(target=lambda: results.extend(fetch_all(server.url, paths, concurrency=16)))
    load.start()
    deadline = time.monotonic() + 30
    while count_opens(settings) < 200 and time.monotonic() < deadline:  # the backup lands mid-load
        time.sleep(0.01)
    made = run_backup(tmp_path / "backups")
    load.join()
    assert made.returncode == 0, made.stderr
    (directory,) = (tmp_path / "backups").iterdir()
    assert made.stdout.strip() == f"Backup written to {directory}"
    assert sorted(p.name for p in directory.iterdir()) == ["deadpixel.db", "signing-keys.json"]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads((directory / "signing-keys.json").read_text()) == json.loads(
        settings.keys_file.read_text()
    )

    copy = sqlite3.connect(directory / "deadpixel.db")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == (SCHEMA_REVISION,)
    copied_opens = copy.execute("SELECT count(*) FROM opens").fetchone()[0]
    # A snapshot: counters agree with the rows they count, although writes went on meanwhile.
    assert copy.execute("SELECT sum(open_count) FROM messages").fetchone()[0] == copied_opens
    copy.close()
    assert 200 <= copied_opens <= len(paths)
    assert [status for _, status in results] == [200] * len(paths)

    # Restoring is copying the two files into a data dir: the copy serves the same pixels.
    server.stop()
    restored = tmp_path / "restored"
    restored.mkdir()
    for path in directory.iterdir():
        (restored / path.name).write_bytes(path.read_bytes())
    restored_url = f"sqlite:///{restored / 'deadpixel.db'}"  # the default store of that data dir
    env = {**server.env, "DEADPIXEL_DATA_DIR": str(restored), "DEADPIXEL_DATABASE_URL": restored_url}
    again = Server(env=env).start()
    try:
        assert [status for _, status in fetch_all(again.url, paths[:10])] == [200] * 10
        again.stop()
    finally:
        again.kill()
    restored_db = sqlite3.connect(restored / "deadpixel.db")
    assert restored_db.execute("SELECT count(*) FROM opens").fetchone()[0] == copied_opens + 10
    restored_db.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_backups_never_overwrite_and_a_failed_one_leaves_nothing(settings: Settings, tmp_path: Path) -> None:
    make_pixels(settings, 1)
    into = tmp_path / "b"
    first = backup(settings, into, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert first.directory.name == "deadpixel-20260102T030405Z"
    with pytest.raises(BackupError, match="already exists"):
        backup(settings, into, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    backup(settings, into, now=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC))

    broken = replace(settings, data_dir=tmp_path / "broken", database_url=f"sqlite:///{tmp_path}/broken/x.db")
    broken.data_dir.mkdir()
    broken.keys_file.write_bytes(settings.keys_file.read_bytes())
    (broken.data_dir / "x.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackupError, match=r"copying .* failed"):
        backup(broken, into, now=datetime(2026, 1, 2, 3, 4, 7, tzinfo=UTC))
    names = sorted(p.name for p in into.iterdir())
    assert names == ["deadpixel-20260102T030405Z", "deadpixel-20260102T030406Z"]


def test_a_postgresql_store_backs_up_the_keys_and_says_how_to_dump_the_data(
    settings: Settings, tmp_path: Path, database_url: str
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL case")
    made = run_backup(tmp_path / "b")
    assert made.returncode == 0, made.stderr
    (directory,) = (tmp_path / "b").iterdir()
    assert [p.name for p in directory.iterdir()] == ["signing-keys.json"]
    assert "pg_dump" in made.stdout


def test_nothing_to_back_up_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEADPIXEL_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("DEADPIXEL_DATABASE_URL", raising=False)
    made = run_backup(tmp_path / "b")
    assert made.returncode == 1
    assert "nothing to back up yet" in made.stderr and "Traceback" not in made.stderr
