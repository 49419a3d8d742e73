"""SQLite audit sink: tables ``audit_records`` and ``audit_checkpoints`` in a database file
(``<data_dir>/audit.db`` by default; any path works, including the AS's own ``bastion.db``).

Durability: WAL with ``synchronous=FULL``, so a COMMIT returns only after the WAL is fsync'd;
one transaction per batch (group commit), on the sink's own thread: while one batch waits
for its fsync, the event loop goes on and the next batch gathers. ``BEGIN IMMEDIATE`` takes
the write lock before the head is read, so processes sharing the file and a writer id extend
the chain one at a time; the head is read from the store only when ``PRAGMA data_version``
says another connection has committed since this one's last batch.

A batch waits at most its ``wait`` for the write lock (SQLite's busy timeout, set again only
when a batch needs a longer one or one shorter by more than ``WAIT_SLACK``), then fails with
``AuditStoreBusy``: another process holding the lock (a ``BEGIN EXCLUSIVE`` left open, a backup
tool) refuses requests within that bound.

The file is created 0600 (its folder 0700 if made here); SQLite gives its ``-wal`` and ``-shm``
files the database file's mode.

Append-only: the code has no UPDATE or DELETE path, and triggers refuse both (someone with the
file can drop them; that is what the chain and the signatures are for).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit.chain import GENESIS_HASH, ChainHead, SealedRecord
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.errors import AuditStoreBusy
from bastion.audit.model import parse_time
from bastion.audit.private import create_private_file
from bastion.audit.sinks.base import DEFAULT_WRITE_TIMEOUT, WAIT_SLACK, SealedBatch, Sealer
from bastion.audit.sinks.worker import SinkWorker, finish_worker, start_worker

__all__ = ["SqliteAuditSink"]

T = TypeVar("T")
_SQLITE_BUSY = 5  # the primary result code; extended codes keep it in their low byte

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        writer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        time TEXT NOT NULL,
        kind TEXT NOT NULL,
        hash TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (writer, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time)",
    """CREATE TABLE IF NOT EXISTS audit_checkpoints (
        writer TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        time TEXT NOT NULL,
        kid TEXT NOT NULL,
        jws TEXT NOT NULL,
        PRIMARY KEY (writer, seq)
    )""",
    *(
        f"""CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()}
            BEFORE {verb} ON {table}
            BEGIN SELECT RAISE(ABORT, 'audit tables are append-only'); END"""
        for table in ("audit_records", "audit_checkpoints")
        for verb in ("UPDATE", "DELETE")
    ),
)


class SqliteAuditSink:
    def __init__(self, path: Path, *, write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        if not write_timeout > 0:
            raise ValueError("write_timeout must be > 0")
        self.path = path
        self.description = f"sqlite:{path}"
        self.commits = 0
        self.write_timeout = write_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = 0  # the connection's busy timeout as last set
        self._heads = _Heads()
        self._worker: SinkWorker | None = None

    @classmethod
    async def open(cls, path: Path, *,
                   write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> SqliteAuditSink:
        sink = cls(path, write_timeout=write_timeout)
        sink._worker = await start_worker(f"bastion-audit-sqlite:{path.name}", sink._open_sync)
        return sink

    def _open_sync(self) -> None:
        create_private_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.write_timeout)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._busy_ms = _busy_ms(self.write_timeout)
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        worker, self._worker = self._worker, None
        await finish_worker(worker, close)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._conn is None:
                    raise sqlite3.ProgrammingError("the audit database is closed")
                return fn(self._conn)

        if self._worker is None:
            raise sqlite3.ProgrammingError("the audit database is closed")
        return await self._worker.call(call)

    # --- writing -----------------------------------------------------------------------------

    async def append_batch(
        self, writer: str, bodies: Sequence[Mapping[str, Any]], seal: Sealer, *,
        wait: float | None = None,
    ) -> SealedBatch:
        busy_ms = _busy_ms(self.write_timeout if wait is None else wait)

        def write(conn: sqlite3.Connection) -> SealedBatch:
            if busy_ms > self._busy_ms or busy_ms < self._busy_ms - WAIT_SLACK * 1000:
                conn.execute(f"PRAGMA busy_timeout={busy_ms}")
                self._busy_ms = busy_ms
            started = time.monotonic()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != _SQLITE_BUSY:
                    raise
                raise AuditStoreBusy(
                    self.description, time.monotonic() - started,
                    "the write lock stayed held by another connection") from exc
            batch = _write_batch(conn, writer, bodies, seal, self._heads)
            self.commits += 1
            return batch

        return await self._run(write)

    # --- reading -----------------------------------------------------------------------------

    async def head(self, writer: str) -> ChainHead:
        return await self._run(lambda conn: _head(conn, writer))

    async def read(
        self, *, writer: str | None = None, after_seq: int = 0, since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            writers = [writer] if writer is not None else _writers(conn)
            out: list[dict[str, Any]] = []
            for w in writers:
                start = after_seq
                if since is not None:
                    row = conn.execute(
                        "SELECT MIN(seq) FROM audit_records WHERE writer = ? AND time >= ?",
                        (w, since)).fetchone()
                    if row[0] is None:
                        continue
                    start = max(start, int(row[0]) - 1)
                rows = conn.execute(
                    "SELECT record FROM audit_records WHERE writer = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?", (w, start, -1 if limit is None else limit))
                out.extend(json.loads(r[0]) for r in rows)
            return out

        return await self._run(read)

    async def checkpoints(self, *, writer: str | None = None) -> list[Checkpoint]:
        def read(conn: sqlite3.Connection) -> list[Checkpoint]:
            sql = "SELECT writer, seq, hash, time, kid, jws FROM audit_checkpoints"
            args: tuple[str, ...] = ()
            if writer is not None:
                sql, args = sql + " WHERE writer = ?", (writer,)
            rows = conn.execute(sql + " ORDER BY writer, seq", args).fetchall()
            return [Checkpoint(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

        return await self._run(read)

    async def writers(self) -> list[str]:
        return await self._run(_writers)


def _busy_ms(seconds: float) -> int:
    """A wait as SQLite's busy timeout: whole milliseconds in 10 ms steps, rounded down;
    0 tries the lock once."""
    return max(0, int(seconds * 100)) * 10


def _row(sealed: SealedRecord) -> tuple[str, int, str, str, str, str]:
    r = sealed.record
    return (r["writer"], r["seq"], str(r.get("time", "")), str(r.get("kind", "")), r["hash"],
            sealed.line)


def _writers(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT writer FROM audit_records UNION SELECT writer FROM audit_checkpoints "
        "ORDER BY writer").fetchall()
    return [r[0] for r in rows]


def _head(conn: sqlite3.Connection, writer: str) -> ChainHead:
    last = conn.execute(
        "SELECT seq, hash FROM audit_records WHERE writer = ? ORDER BY seq DESC LIMIT 1",
        (writer,)).fetchone()
    cp = conn.execute(
        "SELECT seq, time FROM audit_checkpoints WHERE writer = ? ORDER BY seq DESC LIMIT 1",
        (writer,)).fetchone()
    seq, digest = (int(last[0]), str(last[1])) if last else (0, GENESIS_HASH)
    return ChainHead(writer, seq, digest, int(cp[0]) if cp else 0,
                     parse_time(cp[1]) if cp else None)


class _Heads:
    """The head each writer had after this connection's last commit, valid while
    ``PRAGMA data_version`` is unchanged, i.e. while no other connection (another process, or
    another sink on the same file) has committed since. Read inside the write transaction, so
    nobody can commit between the check and the write."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.heads: dict[str, ChainHead] = {}

    def get(self, conn: sqlite3.Connection, writer: str) -> ChainHead:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.version:
            self.version, self.heads = version, {}
        head = self.heads.get(writer)
        if head is None:
            head = self.heads[writer] = _head(conn, writer)
        return head

    def wrote(self, writer: str, head: ChainHead) -> None:
        # this connection's own commits leave data_version as it was
        self.heads[writer] = head

    def forget(self) -> None:
        self.version, self.heads = None, {}


def _write_batch(conn: sqlite3.Connection, writer: str, bodies: Sequence[Mapping[str, Any]],
                 seal: Sealer, heads: _Heads) -> SealedBatch:
    """Inside a write transaction just begun: read the head, seal, insert, commit."""
    try:
        head = heads.get(conn, writer)
        batch = seal(head, bodies)
        conn.executemany(
            "INSERT INTO audit_records (writer, seq, time, kind, hash, record) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [_row(s) for s in batch.sealed],
        )
        cp = batch.checkpoint
        if cp is not None:
            conn.execute(
                "INSERT INTO audit_checkpoints (writer, seq, hash, time, kid, jws) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (cp.writer, cp.seq, cp.hash, cp.time, cp.kid, cp.jws),
            )
        conn.execute("COMMIT")
    except BaseException:
        heads.forget()
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    heads.wrote(writer, batch.head_after(head))
    return batch
