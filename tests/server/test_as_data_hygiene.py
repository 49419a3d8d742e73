"""What Bastion leaves on disk and for how long: the data folder is 0700, the database (and
SQLite's -wal and -shm files) and the signing keys 0600, whatever the umask; expired state is
purged on a schedule that starts and stops with the server."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.keys import SigningKeys
from bastion.runtime import build_runtime
from bastion.server.purge import ExpiredStatePurge
from bastion.storage import UserRecord
from tests.server.conftest import live_config, make_live
from tests.support import free_port


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems run with, which makes new files world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def world_readable_leftovers(data: Path) -> None:
    """What an earlier Bastion left: everything readable by everyone."""
    SigningKeys.load_or_create(data)
    conn = sqlite3.connect(data / "bastion.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    for path in (data, data / "keys"):
        os.chmod(path, 0o755)  # noqa: S103 - the state under test
    for path in (data / "bastion.db", *(data / "keys").glob("*.json")):
        os.chmod(path, 0o644)
    assert mode(data) == 0o755 and mode(data / "bastion.db") == 0o644


@pytest.mark.parametrize("start", ["fresh", "world-readable leftovers"])
async def test_data_folder_database_and_keys_are_private(
    tmp_path: Path, usual_umask: None, start: str
) -> None:
    data = tmp_path / "data"
    if start != "fresh":
        world_readable_leftovers(data)
    runtime = await build_runtime(live_config(tmp_path, free_port()), source="test")
    try:
        store = runtime.extras["store"]
        await store.create_user(UserRecord("alice", "sub", "hash", 1.0))  # -wal in use
        assert mode(data) == 0o700
        for name in ("bastion.db", "bastion.db-wal", "bastion.db-shm"):
            assert mode(data / name) == 0o600, name
        assert mode(data / "keys") == 0o700
        keys = list((data / "keys").glob("*.json"))
        assert keys
        for key in keys:
            assert mode(key) == 0o600, key.name
    finally:
        for hook in runtime.gateway.on_shutdown:
            await hook()


async def test_purge_schedule_starts_and_stops_with_the_server(tmp_path: Path) -> None:
    running = make_live(tmp_path, purge_interval_seconds=45)
    live = await running.__anext__()
    purge = live.runtime.extras["purge"]
    assert isinstance(purge, ExpiredStatePurge)
    assert purge.running and purge.interval == 45
    assert purge.clock is live.clock  # the server's clock decides what has expired
    await running.aclose()  # shutdown
    assert not purge.running


def test_purge_interval_default_and_bounds(tmp_path: Path) -> None:
    assert live_config(tmp_path, 1).authorization_server.purge_interval_seconds == 600
    for bad in (0, 5, 86401):
        with pytest.raises(Exception, match="purge_interval_seconds"):
            live_config(tmp_path, 1, purge_interval_seconds=bad)


async def test_the_data_folder_is_private_without_the_authorization_server_too(
    tmp_path: Path, usual_umask: None
) -> None:
    """An external issuer and the audit trail only: the folder the audit trail writes into is
    made by the same rule, and the audit trail's bounded wait comes from the configuration."""
    from bastion.config.load import parse_config

    config = parse_config({
        "data_dir": str(tmp_path / "data"),
        "authorization_server": {"enabled": False},
        "trusted_issuers": [{"issuer": "https://as.example.com"}],
        "audit": {"write_timeout_seconds": 0.5},
        "mounts": [{"name": "mcp", "path": "/mcp", "issuers": ["https://as.example.com"],
                    "upstream": {"url": "http://127.0.0.1:9/mcp"}}],
    }, source="test")
    runtime = await build_runtime(config, source="test")
    try:
        assert mode(tmp_path / "data") == 0o700
        assert runtime.extras["audit"].write_timeout == 0.5
    finally:
        for hook in runtime.gateway.on_shutdown:
            await hook()
