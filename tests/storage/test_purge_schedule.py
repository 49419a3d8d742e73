"""Expired state is purged on a schedule, on SQLite and PostgreSQL alike: a real purge through
the scheduler, with the server's clock injected and the interval's wait handed to the test."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import asyncpg
import pytest

from bastion.clock import FixedClock
from bastion.server.purge import ExpiredStatePurge
from bastion.storage import (
    AuthorizationCode,
    PendingAuthorization,
    RefreshToken,
    Session,
    Store,
    StoreError,
    hash_secret,
)
from tests.storage.backends import Backend, PostgresBackend, SqliteBackend

NOW = 1_800_000_000.0
INTERVAL = 600.0


class Ticker:
    """Stands in for the scheduler's sleep: an interval is over when the test says so."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._arrived = asyncio.Event()
        self._release = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self._arrived.set()
        await self._release.wait()
        self._release.clear()

    async def next_wait(self) -> None:
        """Until the scheduler waits again, i.e. its last purge is over."""
        await asyncio.wait_for(self._arrived.wait(), 10)
        self._arrived.clear()

    async def tick(self) -> None:
        self._release.set()
        await self.next_wait()


async def seed(store: Store, expires: float) -> None:
    """One of each thing that expires, all at ``expires``."""
    await store.save_code(AuthorizationCode(
        "code", "c", "http://localhost/cb", "x" * 43, "https://rs", ("a",), "sub",
        expires - 60, expires, "fam-code", "jti-code", False))
    await store.save_pending(PendingAuthorization(
        "req", "csrf", hash_secret("b"), "c", "http://localhost/cb", None, "x" * 43,
        "https://rs", ("a",), expires - 600, expires))
    await store.create_session(Session("sess", "sub", "alice", expires - 60, expires))
    await store.create_refresh_token(RefreshToken(
        "rt", "fam-grant", "c", "sub", ("a",), ("https://rs",), expires - 60, expires))
    await store.record_access_token("at", "fam-grant", expires)


TABLES = ("auth_codes", "pending_authorizations", "sessions", "refresh_tokens",
          "access_tokens", "refresh_families")


async def rows(backend: Backend) -> dict[str, int]:
    """How many rows each table holds, read beneath the store."""
    if isinstance(backend, SqliteBackend):
        conn = sqlite3.connect(backend.path)
        try:
            return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
                    for t in TABLES}
        finally:
            conn.close()
    assert isinstance(backend, PostgresBackend)
    pg = await asyncpg.connect(backend.server_url)
    try:
        return {t: await pg.fetchval(f'SELECT COUNT(*) FROM "{backend.schema}".{t}')  # noqa: S608
                for t in TABLES}
    finally:
        await pg.close()


SEEDED = dict.fromkeys(TABLES, 1)
EMPTY = dict.fromkeys(TABLES, 0)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


async def test_purge_runs_at_start_then_every_interval(
    backend: Backend, clock: FixedClock
) -> None:
    store = await backend.open()
    ticker = Ticker()
    purge = ExpiredStatePurge(store, clock, INTERVAL, wait=ticker.wait)
    await seed(store, NOW + 300)
    await store.revoke_family("fam-replayed", NOW)  # a replayed code's grant: no token left
    await purge.start()
    try:
        await ticker.next_wait()  # the run at start: nothing has expired yet
        assert purge.runs == 1 and ticker.waits == [INTERVAL]
        assert await rows(backend) == {**SEEDED, "refresh_families": 2}
        clock.advance(INTERVAL)
        await ticker.tick()  # pending request, session, access token and refresh token expire
        assert purge.runs == 2 and purge.failures == 0
        assert await store.get_refresh_token("rt") is None
        assert await store.get_pending("req", 0.0) is None
        assert await store.get_session("sess", 0.0) is None
        # kept a day, to recognise a replay: the code, and a revoked grant's family (a grant
        # that was not revoked goes with its last token)
        assert await rows(backend) == {**EMPTY, "auth_codes": 1, "refresh_families": 1}
        clock.advance(86400)
        await ticker.tick()  # a day on: the code (kept to recognise a replay) and the grant
        assert ticker.waits == [INTERVAL] * 3
        assert await rows(backend) == EMPTY
    finally:
        await purge.stop()
        await store.close()
    assert not purge.running


async def test_nothing_live_is_purged(backend: Backend, clock: FixedClock) -> None:
    store = await backend.open()
    ticker = Ticker()
    purge = ExpiredStatePurge(store, clock, INTERVAL, wait=ticker.wait)
    await seed(store, NOW + 86400 * 3)
    await purge.start()
    try:
        await ticker.next_wait()
        clock.advance(INTERVAL)
        await ticker.tick()
        assert await rows(backend) == SEEDED
    finally:
        await purge.stop()
        await store.close()


class Flaky:
    """A store whose purge fails the first times, then works."""

    def __init__(self, store: Store, errors: list[Exception]) -> None:
        self.store, self.errors = store, errors

    async def purge_expired(self, now: float) -> int:
        if self.errors:
            raise self.errors.pop(0)
        return await self.store.purge_expired(now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_a_failed_purge_is_logged_and_tried_again(
    store: Store, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    ticker = Ticker()
    flaky: Any = Flaky(store, [StoreError("database is locked"), RuntimeError("surprise")])
    purge = ExpiredStatePurge(flaky, clock, INTERVAL, wait=ticker.wait)
    await seed(store, NOW - 1)
    with caplog.at_level(logging.ERROR, logger="bastion.server.purge"):
        await purge.start()
        try:
            await ticker.next_wait()
            await ticker.tick()
            assert purge.running and purge.failures == 2
            assert await store.get_session("sess", 0.0) is not None
            await ticker.tick()
            assert purge.failures == 2 and purge.runs == 3
            assert await store.get_session("sess", 0.0) is None
        finally:
            await purge.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any("database is locked" in m for m in messages)
    assert any(r.exc_info for r in caplog.records)  # the unexpected one with its traceback


async def test_stop_ends_the_schedule(store: Store, clock: FixedClock) -> None:
    ticker = Ticker()
    purge = ExpiredStatePurge(store, clock, INTERVAL, wait=ticker.wait)
    await purge.start()
    await ticker.next_wait()
    assert purge.running
    await purge.stop()
    assert not purge.running and purge.runs == 1
    await purge.stop()  # twice is fine
