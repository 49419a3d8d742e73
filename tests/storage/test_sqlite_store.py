"""SQLite store: schema, records, and the atomicity contracts across processes."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from bastion.storage import (
    AlreadyExists,
    AuthorizationCode,
    RefreshToken,
    SqliteStore,
    StoreError,
    UserRecord,
    hash_secret,
    open_store,
)
from bastion.storage.sqlite import SCHEMA_VERSION


def _code(code_hash: str, now: float = 1000.0) -> AuthorizationCode:
    return AuthorizationCode(code_hash, "c", "http://localhost/cb", "x" * 43, "https://rs",
                             ("a",), "sub", now, now + 60, "fam-" + code_hash, "jti-" + code_hash,
                             True)


def _rt(token_hash: str, family: str = "fam") -> RefreshToken:
    return RefreshToken(token_hash, family, "c", "sub", ("a",), ("https://rs",), 1000.0, 99999.0)


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path)
    await store.close()
    conn = sqlite3.connect(tmp_path / "bastion.db")
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await open_store(None, tmp_path)


async def test_codes_are_stored_only_as_hashes(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path)
    await store.save_code(_code(hash_secret("the-code")))
    await store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("bastion.db*"))
    assert b"the-code" not in raw


async def test_users_unique(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    await store.create_user(UserRecord("alice", "s1", "h", 1.0))
    with pytest.raises(AlreadyExists):
        await store.create_user(UserRecord("alice", "s2", "h", 1.0))
    assert [u.username for u in await store.list_users()] == ["alice"]
    assert await store.delete_user("alice") and not await store.delete_user("alice")
    await store.close()


async def test_redeem_code_once_then_replayed(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path)
    await store.save_code(_code("h1"))
    results = await asyncio.gather(*(store.redeem_code("h1", 1001.0) for _ in range(10)))
    assert sorted(r.status for r in results) == ["ok"] + ["replayed"] * 9
    assert (await store.redeem_code("nope", 1001.0)).status == "unknown"
    await store.close()


async def test_rotation_grace_and_reuse(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path)
    await store.create_refresh_token(_rt("r1"))
    await store.record_access_token("at1", "fam", 5000.0)
    assert (await store.rotate_refresh_token("r1", "r2", 9000.0, 1000.0, 10)).status == "rotated"
    assert (await store.rotate_refresh_token("r1", "r3", 9000.0, 1005.0, 10)).status == "grace"
    assert (await store.rotate_refresh_token("r1", "r4", 9000.0, 1011.0, 10)).status == "reused"
    for h in ("r2", "r3"):
        rt = await store.get_refresh_token(h)
        assert rt is not None and rt.revoked
    assert await store.is_access_token_revoked("at1")
    assert (await store.rotate_refresh_token("r2", "r5", 9000.0, 1012.0, 10)).status == "invalid"
    await store.close()


def _redeem_worker(db: str, n: int, queue: multiprocessing.Queue[list[str]]) -> None:
    async def run() -> list[str]:
        store = await SqliteStore.open(Path(db))
        out = []
        for i in range(n):
            out.append((await store.redeem_code(f"code-{i}", 1001.0)).status)
            new = f"rt-{i}-{multiprocessing.current_process().pid}"
            r = await store.rotate_refresh_token(f"rt-{i}", new, 9000.0, 1001.0, 0)
            out.append("rt-" + r.status)
        await store.close()
        return out

    queue.put(asyncio.run(run()))


async def test_redemption_and_rotation_atomic_across_processes(tmp_path: Path) -> None:
    n = 50
    store = await open_store(None, tmp_path)
    for i in range(n):
        await store.save_code(_code(f"code-{i}"))
        await store.create_refresh_token(_rt(f"rt-{i}", family=f"f{i}"))
    await store.close()
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = ctx.Queue()
    procs = [ctx.Process(target=_redeem_worker, args=(str(tmp_path / "bastion.db"), n, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    codes = [s for r in results for s in r if not s.startswith("rt-")]
    rts = [s for r in results for s in r if s.startswith("rt-")]
    assert codes.count("ok") == n and codes.count("replayed") == n
    # exactly one rotation wins; with no grace window the loser is treated as reuse
    assert rts.count("rt-rotated") == n and rts.count("rt-reused") == n
