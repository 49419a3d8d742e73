"""A store held by someone else refuses appends within a bounded wait (default 2 s), instead of
holding each request for as long as the lock is held (SQLite's busy timeout was 30 s, and a
record queued behind a stuck batch waited twice that; PostgreSQL and the JSONL file's flock
waited without end). Each store, with a real lock taken by another connection or process
handle; a PostgreSQL server that stops answering; the wait a queued record is given."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.audit import (
    AuditEvent,
    AuditLog,
    AuditSigner,
    AuditUnavailable,
    Principal,
    open_audit_log,
    verify,
)
from bastion.audit.errors import AuditStoreBusy
from bastion.audit.sinks.base import DEFAULT_WRITE_TIMEOUT, SealedBatch, Sealer
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.sinks.postgres import PostgresAuditSink
from bastion.audit.sinks.sqlite import SqliteAuditSink
from tests.audit.backends import stored
from tests.audit.silent_proxy import silent_proxy
from tests.storage.services import drop_schema, require_postgres, unique_schema

HANG = 15.0  # far past any bound under test: reaching it means the append waited unbounded


def event(i: int) -> AuditEvent:
    return AuditEvent("gateway.decision", correlation_id=f"req-{i}",
                      principal=Principal("https://as.example", "alice"), decision="allow")


async def refused(log: AuditLog, i: int) -> AuditUnavailable:
    with pytest.raises(AuditUnavailable) as caught:
        await asyncio.wait_for(log.append(event(i)), HANG)
    return caught.value


def test_the_default_bound_is_small() -> None:
    assert 0 < DEFAULT_WRITE_TIMEOUT <= 2.0


async def test_a_sqlite_store_locked_by_another_connection_refuses_within_the_default_bound(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = await open_audit_log(tmp_path, writer="w")  # the defaults a deployment gets
    other = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # as a backup tool or a stuck process would hold it
    try:
        with caplog.at_level(logging.ERROR, logger="bastion.audit"):
            error = await refused(log, 1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "write lock stayed held by another connection" in error.description
    assert "audit.db" in caplog.text and "write lock stayed held" in caplog.text
    assert "refused (503)" in caplog.text
    await log.append(event(2))  # the lock is gone: appends go through again
    await log.close()
    records, checkpoints = await stored(await SqliteAuditSink.open(tmp_path / "audit.db"))
    assert [r.get("correlation_id") for r in records] == [None, "req-2"]  # audit.opened first
    assert verify(records, checkpoints, log.signer.public_jwks(), require_signed=True).ok


async def test_a_jsonl_file_locked_by_another_process_refuses_within_the_bound(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(await JsonlSink.open(path, write_timeout=0.3), AuditSigner.generate(),
                   writer="w", write_timeout=0.3)
    await log.append(event(0))
    holder = os.open(path, os.O_RDONLY)  # its own open file: its flock excludes the sink's
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        error = await refused(log, 1)
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert "lock stayed held by another process" in error.description
    await log.append(event(2))
    await log.close()
    records, _ = await stored(await JsonlSink.open(path))
    assert [r["correlation_id"] for r in records] == ["req-0", "req-2"]


async def test_a_locked_mirror_refuses_within_the_bound(tmp_path: Path) -> None:
    mirror = tmp_path / "audit.jsonl"
    log = await open_audit_log(tmp_path, writer="w", jsonl=mirror, write_timeout=0.3)
    holder = os.open(mirror, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        error = await refused(log, 1)
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
    assert "audit.jsonl" in error.description
    await log.append(event(2))
    await log.close()


@pytest.mark.postgres
@pytest.mark.parametrize("held", ["writer-lock", "table-lock"])
async def test_a_postgres_store_locked_by_another_session_refuses_within_the_bound(
        held: str) -> None:
    server = await require_postgres()
    schema = unique_schema()
    url = f"{server}?schema={schema}"
    other = None
    try:
        log = AuditLog(await PostgresAuditSink.open(url, write_timeout=0.3),
                       AuditSigner.generate(), writer="w", write_timeout=0.3)
        await log.append(event(0))
        other = await asyncpg.connect(server, server_settings={"search_path": f'"{schema}"'})
        if held == "writer-lock":  # another process sharing the writer id, stuck mid-batch
            await other.execute("SELECT pg_advisory_lock(hashtext('bastion.audit.writer:w'))")
        else:  # a maintenance statement holding the table
            await other.execute("BEGIN")
            await other.execute("LOCK TABLE audit_records IN ACCESS EXCLUSIVE MODE")
        error = await refused(log, 1)
        assert "lock stayed held by another session" in error.description
        await other.close()
        other = None
        await log.append(event(2))
        await log.close()
        records, checkpoints = await stored(await PostgresAuditSink.open(url))
        assert [r["correlation_id"] for r in records] == ["req-0", "req-2"]
        assert verify(records, checkpoints, log.signer.public_jwks(), require_signed=True).ok
    finally:
        if other is not None:
            await other.close()
        await drop_schema(server, schema)


@pytest.mark.postgres
async def test_a_postgres_server_that_stops_answering_is_given_up_within_the_bound() -> None:
    server = await require_postgres()
    schema = unique_schema()
    address = server.split("@", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    try:
        async with silent_proxy(host, int(port)) as proxy:
            via = server.replace(address, f"127.0.0.1:{proxy.port}")
            log = AuditLog(await PostgresAuditSink.open(f"{via}?schema={schema}",
                                                        write_timeout=0.3),
                           AuditSigner.generate(), writer="w", write_timeout=0.3)
            await log.append(event(0))
            proxy.silent = True
            error = await refused(log, 1)
            assert "did not answer" in error.description
            proxy.silent = False
            await asyncio.wait_for(log.append(event(2)), HANG)  # a fresh line is used
            await asyncio.wait_for(log.close(), HANG)
        records, _ = await stored(await PostgresAuditSink.open(f"{server}?schema={schema}"))
        assert {"req-0", "req-2"} <= {r["correlation_id"] for r in records}
    finally:
        await drop_schema(server, schema)


class StuckSink:
    """A store whose first batch hangs until released and then fails as a lock timeout; it
    notes the wait each batch is given."""

    description = "stuck"
    commits = 0

    def __init__(self) -> None:
        self.waits: list[float | None] = []
        self.release = asyncio.Event()

    async def append_batch(self, writer: str, bodies: Sequence[Mapping[str, Any]],
                           seal: Sealer, *, wait: float | None = None) -> SealedBatch:
        self.waits.append(wait)
        if len(self.waits) == 1:
            await self.release.wait()
        raise AuditStoreBusy(self.description, wait or 0.0, "the write lock stayed held")

    async def close(self) -> None:
        pass


async def test_a_record_queued_behind_a_stuck_batch_gets_only_what_is_left_of_its_time(
        ) -> None:
    """The case that made a request wait over 60 s: B arrives while A's batch waits for the
    lock; B's batch must not wait a full bound again, only what is left of B's own."""
    now = [1000.0]
    sink = StuckSink()
    log = AuditLog(sink, AuditSigner.generate(), writer="w",  # type: ignore[arg-type]
                   write_timeout=2.0, clock=lambda: now[0])
    a = asyncio.create_task(log.append(event(0)))
    while not sink.waits:
        await asyncio.sleep(0)
    assert sink.waits == [2.0]  # A's whole time
    now[0] = 1001.5
    b = asyncio.create_task(log.append(event(1)))
    await asyncio.sleep(0)
    now[0] = 1002.0  # A's batch gives up after its 2 s
    sink.release.set()
    with pytest.raises(AuditUnavailable):
        await a
    with pytest.raises(AuditUnavailable):
        await b
    assert sink.waits[1] == pytest.approx(1.5)  # B came at 1001.5: 0.5 s of its 2 s are gone


async def test_sqlite_sets_its_busy_timeout_only_when_a_batch_needs_another(
        tmp_path: Path) -> None:
    """The common case (a record that waited a few milliseconds for the batch before it) costs
    no PRAGMA; a batch with much less time left lowers the wait, a later one raises it again."""
    sink = await SqliteAuditSink.open(tmp_path / "a.db", write_timeout=2.0)

    def nothing(head: Any, bodies: Sequence[Mapping[str, Any]]) -> SealedBatch:
        return SealedBatch([], None)

    try:
        for wait, busy_ms in ((1.95, 2000), (0.5, 500), (0.45, 500), (1.999, 1990)):
            await sink.append_batch("w", [], nothing, wait=wait)
            assert sink._busy_ms == busy_ms, (wait, sink._busy_ms)
    finally:
        await sink.close()
