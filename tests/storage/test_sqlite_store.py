"""SQLite specifics; the behaviour shared with PostgreSQL is in ``test_store_contract.py`` and
``test_store_race.py``, which run against both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bastion.storage import SqliteStore, UserRecord, open_store
from bastion.storage.sqlite import SCHEMA_VERSION


async def test_default_file_schema_version_and_wal(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path)
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "bastion.db"
    await store.close()
    conn = sqlite3.connect(tmp_path / "bastion.db")
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_url_absolute_and_relative_to_data_dir(tmp_path: Path) -> None:
    absolute = await open_store(f"sqlite:///{tmp_path / 'abs' / 'x.db'}", tmp_path / "data")
    await absolute.create_user(UserRecord("alice", "s1", "h", 1.0))
    await absolute.close()
    assert (tmp_path / "abs" / "x.db").exists()
    relative = await open_store("sqlite:rel/y.db", tmp_path / "data")
    await relative.close()
    assert (tmp_path / "data" / "rel" / "y.db").exists()
