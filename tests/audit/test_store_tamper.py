"""Tamper tests on the real stores (SQLite, PostgreSQL, JSONL): write through ``AuditLog``,
change the store behind its back (triggers bypassed, as an attacker with the file or a superuser
login could), read it back, and ``verify`` names the first bad record."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from bastion.audit.chain import ChainHead, record_hash
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.export import load
from bastion.audit.keys import AuditSigner
from bastion.audit.log import AuditLog
from bastion.audit.model import AuditEvent, Principal, format_time
from bastion.audit.verify import Report, verify
from tests.audit.backends import Backend, PostgresBackend, SqliteBackend
from tests.audit.chains import rechain

Records = list[dict[str, Any]]
Checkpoints = list[Checkpoint]


async def write(backend: Backend, signer: AuditSigner, n: int = 30) -> tuple[Records,
                                                                                Checkpoints]:
    log = AuditLog(await backend.open(), signer, writer="gw-1", checkpoint_every=10)
    for i in range(1, n + 1):
        await log.append(AuditEvent("gateway.decision", correlation_id=f"req-{i}",
                                    principal=Principal("https://as.example", "alice"),
                                    tool="read_file", decision="allow", rule="r1"))
    await log.close()
    return await read(backend)


async def read(backend: Backend) -> tuple[Records, Checkpoints]:
    sink = await backend.open()
    try:
        return await load(sink)
    finally:
        await sink.close()


async def tamper_and_verify(backend: Backend, signer: AuditSigner,
                            change: Callable[[Records, Checkpoints], tuple[Records, Checkpoints]],
                            ) -> Report:
    records, checkpoints = await write(backend, signer)
    assert verify(records, checkpoints, signer.public_jwks()).ok
    assert [c.seq for c in checkpoints] == [10, 20, 30]
    await backend.tamper(*change(copy.deepcopy(records), list(checkpoints)))
    records, checkpoints = await read(backend)
    return verify(records, checkpoints, signer.public_jwks())


def edit(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    records[14]["decision"] = "deny"
    return records, cps


def edit_rechain(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    records[14]["decision"] = "deny"
    return rechain(records), cps


def delete(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    del records[14]
    return records, cps


def delete_rechain(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    del records[14]
    return rechain(records, renumber=True), cps


def insert(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    # a store keeps one record per seq: the forger shifts the later ones up
    forged = copy.deepcopy(records[14])
    forged["decision"] = "allow"
    forged["correlation_id"] = "forged"
    forged["hash"] = record_hash(forged)
    for r in records[14:]:
        r["seq"] += 1
    records.insert(14, forged)
    return records, cps


def insert_rechain(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    records, cps = insert(records, cps)
    return rechain(records, renumber=True), cps


def reorder(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    # swap the places (seqs) of two records
    records[14]["seq"], records[15]["seq"] = records[15]["seq"], records[14]["seq"]
    return records, cps


def reorder_rechain(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    records[14], records[15] = records[15], records[14]
    return rechain(records, renumber=True), cps


def truncate(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    return records[:25], cps


def forge_checkpoint(records: Records, cps: Checkpoints) -> tuple[Records, Checkpoints]:
    records = rechain(records[:20] + records[21:], renumber=True)
    forger = AuditSigner.generate()
    fake = [forger.sign(ChainHead("gw-1", s, records[s - 1]["hash"]), format_time(0))
            for s in (10, 20, 29)]
    return records, fake


CASES: list[tuple[str, Any, str, int]] = [
    ("edit", edit, "edited", 15),
    ("edit+rechain", edit_rechain, "rewritten", 11),
    ("delete", delete, "missing", 15),
    ("delete+rechain", delete_rechain, "rewritten", 11),
    ("insert", insert, "rewritten", 11),   # and the shifted record 16 fails its own hash
    ("insert+rechain", insert_rechain, "rewritten", 11),
    ("reorder", reorder, "edited", 15),
    ("reorder+rechain", reorder_rechain, "rewritten", 11),
    ("truncate", truncate, "truncated", 26),
    ("forge-checkpoint", forge_checkpoint, "bad_checkpoint", 10),
]


@pytest.mark.parametrize(("name", "change", "kind", "seq"), CASES, ids=[c[0] for c in CASES])
async def test_tampering_is_found(backend: Backend, signer: AuditSigner, name: str,
                                  change: Any, kind: str, seq: int) -> None:
    report = await tamper_and_verify(backend, signer, change)
    assert not report.ok, name
    first = report.first_problem
    assert first is not None
    assert (first.kind, first.seq) == (kind, seq), report.problems
    if name == "insert":
        assert any(p.kind == "edited" and p.seq == 16 for p in report.problems)


async def test_truncating_the_tail_with_its_checkpoint_needs_an_anchor(
        backend: Backend, signer: AuditSigner) -> None:
    records, checkpoints = await write(backend, signer)
    anchor = checkpoints[-1]
    await backend.tamper(records[:20], checkpoints[:2])
    records, checkpoints = await read(backend)
    assert verify(records, checkpoints, signer.public_jwks()).ok  # the documented limit
    report = verify(records, [*checkpoints, anchor], signer.public_jwks())
    assert report.first_problem is not None
    assert (report.first_problem.kind, report.first_problem.seq) == ("truncated", 21)


async def test_the_log_continues_the_stored_chain_after_reopening(
        backend: Backend, signer: AuditSigner) -> None:
    await write(backend, signer, n=5)
    await write(backend, signer, n=5)
    records, checkpoints = await read(backend)
    assert [r["seq"] for r in records] == list(range(1, 11))
    assert verify(records, checkpoints, signer.public_jwks(), require_signed=True).ok


async def test_a_truncated_store_refuses_new_records(backend: Backend,
                                                     signer: AuditSigner) -> None:
    records, checkpoints = await write(backend, signer)
    await backend.tamper(records[:25], checkpoints)
    log = AuditLog(await backend.open(), signer, writer="gw-1")
    try:
        with pytest.raises(Exception, match="truncated"):
            await log.append(AuditEvent("config.reloaded"))
    finally:
        await log.close()


async def test_append_only_sqlite(tmp_path: Any, signer: AuditSigner) -> None:
    backend = SqliteBackend(tmp_path)
    await write(backend, signer, n=3)
    conn = sqlite3.connect(backend.path)
    try:
        for sql in ("UPDATE audit_records SET kind = 'x'", "DELETE FROM audit_records",
                    "UPDATE audit_checkpoints SET seq = 1", "DELETE FROM audit_checkpoints"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    finally:
        conn.close()


@pytest.mark.postgres
async def test_append_only_postgres(signer: AuditSigner) -> None:
    from tests.storage.services import drop_schema, require_postgres, unique_schema

    server = await require_postgres()
    schema = unique_schema()
    backend = PostgresBackend(server, schema)
    try:
        await write(backend, signer, n=3)
        conn = await backend._connect()
        try:
            for sql in ("UPDATE audit_records SET kind = 'x'", "DELETE FROM audit_records",
                        "TRUNCATE audit_records", "DELETE FROM audit_checkpoints",
                        "TRUNCATE audit_checkpoints"):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await conn.execute(sql)
        finally:
            await conn.close()
    finally:
        await drop_schema(server, schema)
