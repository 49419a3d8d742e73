"""PostgreSQL audit sink (asyncpg): ``audit_records`` and ``audit_checkpoints`` in the schema
named by the URL's ``?schema=`` (the same convention as the AS store), created if missing.

Each batch is one transaction that first takes a transaction-scoped advisory lock on the writer
(so replicas or processes that share a writer id extend its chain one at a time, and replicas
with their own ids never wait on each other), reads the head, seals, inserts, commits. COMMIT
returns once the WAL is flushed (``synchronous_commit`` on, the server default; the sink sets it
for its sessions in case the server default was lowered).

Bounded waits: the sink's sessions run with ``lock_timeout`` set to the write timeout (and a
batch given less by more than ``WAIT_SLACK`` sets its own with ``SET LOCAL``), so a batch that
waits for the writer's advisory lock or a table lock held by another session gives up with
``AuditStoreBusy``; a server that does not answer at all (stopped, or cut off without a reset)
is given up by the client ``GRACE`` seconds later, and that connection is dropped rather than
rolled back over a line that may be dead. A batch given up this way may or may not have been
committed: its requests are refused all the same (fail closed), and the next batch reads the
head back.

Append-only: no UPDATE or DELETE in the code, and triggers refuse UPDATE, DELETE and TRUNCATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import asyncpg

from bastion.audit.chain import GENESIS_HASH, ChainHead
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.errors import AuditStoreBusy
from bastion.audit.model import parse_time
from bastion.audit.sinks.base import DEFAULT_WRITE_TIMEOUT, WAIT_SLACK, SealedBatch, Sealer
from bastion.storage.postgres import split_schema

__all__ = ["PostgresAuditSink"]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = "bastion.audit.postgres.migrate"
CONNECT_TIMEOUT = 10.0
ACQUIRE_TIMEOUT = 10.0
POOL_SIZE = 4
GRACE = 0.5  # past a batch's wait, for a server that does not answer at all
CLOSE_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE audit_records (
    writer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    hash TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);
CREATE INDEX audit_records_time ON audit_records (time);
CREATE TABLE audit_checkpoints (
    writer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    time TEXT NOT NULL,
    kid TEXT NOT NULL,
    jws TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit tables are append-only';
END
$$;
CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"""

_INSERT_RECORD = ("INSERT INTO audit_records (writer, seq, time, kind, hash, record) "
                  "VALUES ($1, $2, $3, $4, $5, $6)")
_INSERT_CHECKPOINT = ("INSERT INTO audit_checkpoints (writer, seq, hash, time, kid, jws) "
                      "VALUES ($1, $2, $3, $4, $5, $6)")


class PostgresAuditSink:
    def __init__(self, pool: Any, schema: str | None, *,
                 write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        if not write_timeout > 0:
            raise ValueError("write_timeout must be > 0")
        self._pool: Any = pool
        self.schema = schema
        self.description = f"postgresql schema {schema or '(default)'}"
        self.commits = 0
        self.write_timeout = write_timeout

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None, pool_size: int = POOL_SIZE,
                   write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> PostgresAuditSink:
        dsn, url_schema = split_schema(url)
        schema = schema or url_schema
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r}: expected lower-case letters, digits, _")
        if not write_timeout > 0:
            raise ValueError("write_timeout must be > 0")
        settings = {"synchronous_commit": "on",
                    "lock_timeout": f"{_lock_ms(write_timeout)}ms"}
        if schema:
            settings["search_path"] = f'"{schema}"'
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size,
                                         timeout=CONNECT_TIMEOUT, server_settings=settings)
        sink = cls(pool, schema, write_timeout=write_timeout)
        try:
            await sink._migrate()
        except BaseException:
            await pool.close()
            raise
        return sink

    async def _migrate(self) -> None:
        async with self._transaction() as c:
            await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _MIGRATION_LOCK)
            if self.schema is not None:
                exists = await c.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1",
                                          self.schema)
                if exists is None:
                    await c.execute(f'CREATE SCHEMA "{self.schema}"')
            if await c.fetchval("SELECT to_regclass('audit_records')") is None:
                await c.execute(_SCHEMA)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                pool.terminate()  # a server that does not answer does not hold up a shutdown

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise asyncpg.InterfaceError("the audit sink is closed")
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    # --- writing -----------------------------------------------------------------------------

    async def append_batch(
        self, writer: str, bodies: Sequence[Mapping[str, Any]], seal: Sealer, *,
        wait: float | None = None,
    ) -> SealedBatch:
        if self._pool is None:
            raise asyncpg.InterfaceError("the audit sink is closed")
        wait = self.write_timeout if wait is None else max(0.0, wait)
        loop = asyncio.get_running_loop()
        started = loop.time()
        give_up = started + wait + GRACE

        def busy(what: str) -> AuditStoreBusy:
            return AuditStoreBusy(self.description, loop.time() - started, what)

        try:
            conn = await self._pool.acquire(timeout=wait + GRACE)
        except TimeoutError:
            raise busy("no connection to the server could be had") from None
        try:
            try:
                async with asyncio.timeout_at(give_up):
                    batch = await self._write(conn, writer, bodies, seal, wait)
            except asyncpg.LockNotAvailableError as exc:
                await _roll_back(conn, give_up - loop.time())
                raise busy("a lock stayed held by another session") from exc
            except TimeoutError:
                conn.terminate()
                raise busy("the server did not answer") from None
            except asyncpg.PostgresError:
                await _roll_back(conn, give_up - loop.time())
                raise
            except BaseException:
                conn.terminate()  # the line's state is unknown: do not reuse it
                raise
        finally:
            await self._pool.release(conn)
        self.commits += 1
        return batch

    async def _write(self, c: Any, writer: str, bodies: Sequence[Mapping[str, Any]],
                     seal: Sealer, wait: float) -> SealedBatch:
        await c.execute("BEGIN")
        if wait < self.write_timeout - WAIT_SLACK:  # not in the common case: no round trip
            await c.execute(f"SET LOCAL lock_timeout = '{_lock_ms(wait)}ms'")
        await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                        f"bastion.audit.writer:{writer}")
        batch = seal(await _head(c, writer), bodies)
        if batch.sealed:
            await c.executemany(_INSERT_RECORD, [
                (s.record["writer"], s.record["seq"], str(s.record.get("time", "")),
                 str(s.record.get("kind", "")), s.record["hash"], s.line)
                for s in batch.sealed])
        cp = batch.checkpoint
        if cp is not None:
            await c.execute(_INSERT_CHECKPOINT, cp.writer, cp.seq, cp.hash, cp.time,
                            cp.kid, cp.jws)
        await c.execute("COMMIT")
        return batch

    # --- reading -----------------------------------------------------------------------------

    async def head(self, writer: str) -> ChainHead:
        async with self._connection() as c:
            return await _head(c, writer)

    async def read(
        self, *, writer: str | None = None, after_seq: int = 0, since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async with self._connection() as c:
            writers = [writer] if writer is not None else await _writers(c)
            for w in writers:
                start = after_seq
                if since is not None:
                    first = await c.fetchval(
                        "SELECT MIN(seq) FROM audit_records WHERE writer = $1 AND time >= $2",
                        w, since)
                    if first is None:
                        continue
                    start = max(start, int(first) - 1)
                rows = await c.fetch(
                    "SELECT record FROM audit_records WHERE writer = $1 AND seq > $2 "
                    "ORDER BY seq LIMIT $3", w, start, limit)
                out.extend(json.loads(r["record"]) for r in rows)
        return out

    async def checkpoints(self, *, writer: str | None = None) -> list[Checkpoint]:
        sql = "SELECT writer, seq, hash, time, kid, jws FROM audit_checkpoints"
        args: tuple[str, ...] = ()
        if writer is not None:
            sql, args = sql + " WHERE writer = $1", (writer,)
        async with self._connection() as c:
            rows = await c.fetch(sql + " ORDER BY writer, seq", *args)
        return [Checkpoint(r["writer"], int(r["seq"]), r["hash"], r["time"], r["kid"], r["jws"])
                for r in rows]

    async def writers(self) -> list[str]:
        async with self._connection() as c:
            return await _writers(c)


def _lock_ms(seconds: float) -> int:
    """A wait as ``lock_timeout``: whole milliseconds in 10 ms steps, at least 1 (0 would
    mean no limit at all)."""
    return max(1, int(seconds * 100) * 10)


async def _roll_back(conn: Any, left: float) -> None:
    """End a failed transaction on a line that answered; drop the line if that fails too."""
    try:
        await conn.execute("ROLLBACK", timeout=max(left, 0.001))
    except Exception:
        conn.terminate()


async def _writers(c: Any) -> list[str]:
    rows = await c.fetch("SELECT writer FROM audit_records UNION "
                         "SELECT writer FROM audit_checkpoints ORDER BY writer")
    return [str(r["writer"]) for r in rows]


async def _head(c: Any, writer: str) -> ChainHead:
    last = await c.fetchrow(
        "SELECT seq, hash FROM audit_records WHERE writer = $1 ORDER BY seq DESC LIMIT 1", writer)
    cp = await c.fetchrow(
        "SELECT seq, time FROM audit_checkpoints WHERE writer = $1 ORDER BY seq DESC LIMIT 1",
        writer)
    seq, digest = (int(last["seq"]), str(last["hash"])) if last else (0, GENESIS_HASH)
    return ChainHead(writer, seq, digest, int(cp["seq"]) if cp else 0,
                     parse_time(cp["time"]) if cp else None)
