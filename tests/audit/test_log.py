"""``AuditLog``: group commit, several writers, checkpoints by count and by time, the mirror,
and the two failure modes."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

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
from bastion.audit.export import load
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.sinks.sqlite import SqliteAuditSink
from tests.audit.backends import Backend, stored


async def signed_ids(db: Path, signer: AuditSigner) -> list[str]:
    """The correlation ids a SQLite audit store holds, in order, once its chain verifies
    fully signed."""
    records, checkpoints = await stored(await SqliteAuditSink.open(db))
    report = verify(records, checkpoints, signer.public_jwks(), require_signed=True)
    assert report.ok, report.problems
    return [r["correlation_id"] for r in records]


def event(i: int, **extra: Any) -> AuditEvent:
    return AuditEvent("gateway.decision", correlation_id=f"req-{i}",
                      principal=Principal("https://as.example", "alice"), decision="allow",
                      extra=extra)


async def test_concurrent_appends_share_commits_and_the_chain_verifies(
        backend: Backend, signer: AuditSigner) -> None:
    log = AuditLog(await backend.open(), signer, writer="gw-1", checkpoint_every=100)
    await asyncio.gather(*(log.append(event(i)) for i in range(500)))
    commits = log.sink.commits
    await log.close()
    assert log.records == 500
    assert commits < 500 / 5, f"{commits} commits for 500 records: no batching"
    records, checkpoints = await stored(await backend.open())
    assert sorted(r["correlation_id"] for r in records) == sorted(f"req-{i}" for i in range(500))
    report = verify(records, checkpoints, signer.public_jwks(), require_signed=True)
    assert report.ok, report.problems


async def test_several_writers_and_a_shared_writer(backend: Backend,
                                                   signer: AuditSigner) -> None:
    """Two replicas with their own ids, and two processes' worth of logs sharing one id: the
    store serialises the shared chain."""
    logs = [AuditLog(await backend.open(), signer, writer=w, checkpoint_every=7)
            for w in ("replica-a", "replica-b", "shared", "shared")]
    await asyncio.gather(*(log.append(event(i)) for i in range(60) for log in logs))
    for log in logs:
        await log.close()
    records, checkpoints = await stored(await backend.open())
    report = verify(records, checkpoints, signer.public_jwks(), require_signed=True)
    assert report.ok, report.problems
    assert {w.writer: w.records for w in report.writers} == {
        "replica-a": 60, "replica-b": 60, "shared": 120}


async def test_checkpoint_by_count_and_by_time(tmp_path: Path, signer: AuditSigner) -> None:
    now = [1_800_000_000.0]
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w",
                   checkpoint_every=5, checkpoint_seconds=30, clock=lambda: now[0])
    for i in range(12):
        await log.append(event(i))
    assert [c.seq for c in await log.sink.checkpoints()] == [5, 10]
    now[0] += 31  # the timer signs the idle unsigned tail
    log._wake.set()
    for _ in range(100):
        if len(await log.sink.checkpoints()) == 3:
            break
        await asyncio.sleep(0.01)
    assert [c.seq for c in await log.sink.checkpoints()] == [5, 10, 12]
    await log.append(event(13))
    await log.close()  # close signs the head
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    assert [c.seq for c in await sink.checkpoints()] == [5, 10, 12, 13]
    await sink.close()


async def test_open_audit_log_from_a_data_dir_with_a_mirror(tmp_path: Path) -> None:
    log = await open_audit_log(tmp_path, writer="gw-1", jsonl=tmp_path / "audit.jsonl")
    await asyncio.gather(*(log.append(event(i)) for i in range(50)))
    await log.close()
    signer = AuditSigner.load_or_create(tmp_path)
    assert (tmp_path / "audit.db").is_file() and (tmp_path / "audit-keys").is_dir()
    for sink in (await SqliteAuditSink.open(tmp_path / "audit.db"),
                 await JsonlSink.open(tmp_path / "audit.jsonl")):
        records, checkpoints = await stored(sink)
        assert len(records) == 51 and records[0]["kind"] == "audit.opened"
        assert verify(records, checkpoints, signer.public_jwks(), require_signed=True).ok


async def test_the_mirror_catches_up_from_the_store(tmp_path: Path, signer: AuditSigner) -> None:
    # records written without the mirror (as if the process died between the two writes)
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    for i in range(5):
        await log.append(event(i))
    await log.close()
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w",
                   mirror=await JsonlSink.open(tmp_path / "m.jsonl"))
    await log.append(event(5))
    await log.close()
    records, checkpoints = await stored(await JsonlSink.open(tmp_path / "m.jsonl"))
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert verify(records, checkpoints, signer.public_jwks(), require_signed=True).ok


async def test_fail_closed_when_the_database_is_closed(tmp_path: Path,
                                                       signer: AuditSigner) -> None:
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w")
    await log.append(event(0))
    _break(sink)  # the database goes away under the log
    with pytest.raises(AuditUnavailable, match="sqlite"):
        await log.append(event(1))
    results = await asyncio.gather(*(log.append(event(i)) for i in range(10)),
                                   return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)


def _break(sink: SqliteAuditSink) -> None:
    """Close the sink's connection under it."""
    assert sink._conn is not None
    sink._conn.close()


async def test_best_effort_logs_and_continues(tmp_path: Path, signer: AuditSigner,
                                              caplog: pytest.LogCaptureFixture) -> None:
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w", mode="best-effort")
    _break(sink)
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        await log.append(event(1, password="hunter2"))
    assert "audit record lost" in caplog.text and "req-1" in caplog.text
    assert "hunter2" not in caplog.text


async def test_fail_closed_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(AuditUnavailable, match="cannot open the audit store"):
        await open_audit_log(tmp_path / "not-a-dir")  # a file where the data folder should be


async def test_fail_closed_when_the_mirror_fails(tmp_path: Path, signer: AuditSigner) -> None:
    mirror = await JsonlSink.open(tmp_path / "m.jsonl")
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w",
                   mirror=mirror)
    await log.append(event(0))
    await mirror.close()
    with pytest.raises(AuditUnavailable, match="jsonl"):
        await log.append(event(1))


async def test_append_after_close(tmp_path: Path, signer: AuditSigner) -> None:
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    await log.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        await log.append(event(0))
    best = AuditLog(await SqliteAuditSink.open(tmp_path / "b.db"), signer, writer="w",
                    mode="best-effort")
    await best.close()
    await best.append(event(0))  # logged, not raised


async def test_an_event_outside_json_fails_alone(tmp_path: Path, signer: AuditSigner) -> None:
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    results = await asyncio.gather(
        log.append(event(0)), log.append(event(1, bad=float("nan"))), log.append(event(2)),
        return_exceptions=True)
    await log.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AuditUnavailable)
    records, checkpoints = await stored(await SqliteAuditSink.open(tmp_path / "a.db"))
    assert [r["correlation_id"] for r in records] == ["req-0", "req-2"]
    assert verify(records, checkpoints, signer.public_jwks()).ok


async def test_a_cancelled_caller_does_not_unwrite_its_record(tmp_path: Path,
                                                              signer: AuditSigner) -> None:
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    task = asyncio.create_task(log.append(event(0)))
    await asyncio.sleep(0)
    task.cancel()
    await log.close()
    records, checkpoints = await stored(await SqliteAuditSink.open(tmp_path / "a.db"))
    assert verify(records, checkpoints, signer.public_jwks()).ok


def test_bad_settings(tmp_path: Path, signer: AuditSigner) -> None:
    sink: Any = object()
    with pytest.raises(ValueError, match="writer id"):
        AuditLog(sink, signer, writer="bad id with spaces")
    with pytest.raises(ValueError, match="mode"):
        AuditLog(sink, signer, writer="w", mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown audit event kind"):
        AuditEvent("gateway.whatever")  # type: ignore[arg-type]


async def test_logs_sharing_a_writer_in_turns_continue_the_stored_chain(
        backend: Backend, signer: AuditSigner) -> None:
    """Each log seals ahead against the head its last batch left; when the other log has
    written since, the store's head differs and the batch is sealed again against it."""
    a = AuditLog(await backend.open(), signer, writer="shared")
    b = AuditLog(await backend.open(), signer, writer="shared")
    for i in range(20):
        await (a if i % 3 else b).append(event(i))
    await a.close()
    await b.close()
    records, checkpoints = await stored(await backend.open())
    assert [r["seq"] for r in records] == list(range(1, 21))
    assert [r["correlation_id"] for r in records] == [f"req-{i}" for i in range(20)]
    report = verify(records, checkpoints, signer.public_jwks(), require_signed=True)
    assert report.ok, report.problems


async def test_a_queued_record_rides_with_the_next_batch(tmp_path: Path,
                                                         signer: AuditSigner) -> None:
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w", linger=30.0)
    await log.append(event(0))
    before = sink.commits
    log.record(event(1))  # nobody waits: not written yet
    await asyncio.sleep(0.05)
    assert sink.commits == before
    await log.append(event(2))  # one commit holds both
    assert sink.commits == before + 1
    records, _ = await load(sink)
    assert [r["correlation_id"] for r in records] == ["req-0", "req-1", "req-2"]
    await log.close()


async def test_a_queued_record_is_written_within_the_linger_time(tmp_path: Path,
                                                                 signer: AuditSigner) -> None:
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w", linger=0.05)
    log.record(event(0))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if log.records == 1:
            break
    assert log.records == 1
    log.record(event(1))
    await log.close()  # close writes what is queued
    assert await signed_ids(tmp_path / "a.db", signer) == ["req-0", "req-1"]


async def test_a_queued_record_that_cannot_be_written_is_logged_as_lost(
        tmp_path: Path, signer: AuditSigner, caplog: pytest.LogCaptureFixture) -> None:
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w", linger=0.01)  # fail-closed
    await log.append(event(0))
    _break(sink)
    with caplog.at_level(logging.ERROR, logger="bastion.audit"):
        log.record(event(1, password="hunter2"))  # does not raise: nothing is left to refuse
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "audit record lost" in caplog.text:
                break
    assert "audit record lost" in caplog.text and "req-1" in caplog.text
    assert "hunter2" not in caplog.text
    with pytest.raises(AuditUnavailable):
        await log.append(event(2))  # an awaited append still fails closed


async def test_the_sqlite_sink_is_set_to_fsync_every_commit(tmp_path: Path) -> None:
    """Invariant 8 (nothing acknowledged is lost): WAL with synchronous=FULL."""
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    try:
        assert sink._conn is not None
        assert sink._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert sink._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await sink.close()


async def test_a_record_written_by_another_connection_moves_the_cached_head(
        tmp_path: Path, signer: AuditSigner) -> None:
    """The sink reads the head again when another connection committed (data_version): a
    batch of another process sharing the writer id, between two of ours, is chained on."""
    log = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    other = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    await log.append(event(0))
    await log.append(event(1))
    await other.append(event(2))
    await log.append(event(3))
    await other.close()
    await log.close()
    assert await signed_ids(tmp_path / "a.db", signer) == [f"req-{i}" for i in range(4)]


async def test_a_busy_store_does_not_block_the_loop_and_nothing_is_lost(
        tmp_path: Path, signer: AuditSigner) -> None:
    """Another process holds the write lock: the appends wait for it on the sink's thread (the
    loop keeps running meanwhile), then land in order on a chain that verifies."""
    sink = await SqliteAuditSink.open(tmp_path / "a.db")
    log = AuditLog(sink, signer, writer="w")
    await log.append(event(0))
    other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as another process would hold it
    appends = asyncio.gather(*(log.append(event(i)) for i in range(1, 6)))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(20):  # the loop is free while the store is busy (its wait is up to 30 s)
        await asyncio.sleep(0.01)
    assert loop.time() - started < 5
    assert not appends.done()
    log.record(event(6))
    other.execute("ROLLBACK")
    other.close()
    await asyncio.wait_for(appends, 30)
    await log.append(event(7))
    await log.close()
    assert await signed_ids(tmp_path / "a.db", signer) == [f"req-{i}" for i in range(8)]


async def test_an_idle_tail_signed_by_another_process_does_not_spin_the_flusher(
        tmp_path: Path, signer: AuditSigner) -> None:
    """A's unsigned tail was signed by B (same writer id): A's timer finds nothing to sign and
    waits a full interval again instead of committing empty batches back to back."""
    a = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w",
                 checkpoint_seconds=0.05)
    b = AuditLog(await SqliteAuditSink.open(tmp_path / "a.db"), signer, writer="w")
    await a.append(event(0))
    await b.append(event(1))
    await b.checkpoint()  # signs the head, A's record included
    before = a.sink.commits
    await asyncio.sleep(0.5)  # ten of A's intervals
    assert a.sink.commits - before <= 12, f"{a.sink.commits - before} commits in 0.5 s"
    await a.close()
    await b.close()


async def test_a_start_records_what_the_previous_run_left_without_an_outcome(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = await open_audit_log(tmp_path, writer="w")
    await log.append(AuditEvent("gateway.decision", correlation_id="c-1", decision="allow"))
    await log.append(AuditEvent("gateway.upstream", correlation_id="c-1"))
    await log.append(AuditEvent("gateway.decision", correlation_id="c-2", decision="allow"))
    await log.close()  # c-2's outcome was never written
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        log = await open_audit_log(tmp_path, writer="w")
        await log.close()
    records, _ = await stored(await SqliteAuditSink.open(tmp_path / "audit.db"))
    opened = [r["extra"] for r in records if r["kind"] == "audit.opened"]
    assert "previous" not in opened[0]  # the first start: nothing before it
    assert opened[1]["previous"] == {"last_seq": 4, "signed_through": 4, "without_outcome": 1,
                                     "without_outcome_seqs": [4]}
    assert "the previous run of writer w left 1 allowed call(s)" in caplog.text
    assert "(seq 4)" in caplog.text
