"""An audit store to test against, and the hands of an attacker who can write to it.

``tamper(records, checkpoints)`` replaces everything in the store with what it is given,
bypassing the append-only triggers the way someone with the database file or a superuser
login could."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from bastion.audit.chain import stored_line
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.export import load
from bastion.audit.rfc8785 import canonicalize_text
from bastion.audit.sinks.base import AuditSink
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.sinks.postgres import PostgresAuditSink
from bastion.audit.sinks.sqlite import SqliteAuditSink

__all__ = ["Backend", "JsonlBackend", "PostgresBackend", "SqliteBackend", "stored"]


async def stored(sink: AuditSink) -> tuple[list[dict[str, Any]], list[Checkpoint]]:
    """Everything a sink holds, read back; the sink is closed after."""
    try:
        return await load(sink)
    finally:
        await sink.close()


class Backend(Protocol):
    name: str

    async def open(self) -> AuditSink: ...
    async def tamper(self, records: Sequence[dict[str, Any]],
                     checkpoints: Sequence[Checkpoint]) -> None: ...
    async def raw_text(self) -> bytes: ...


class SqliteBackend:
    name = "sqlite"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "audit.db"

    async def open(self) -> AuditSink:
        return await SqliteAuditSink.open(self.path)

    async def tamper(self, records: Sequence[dict[str, Any]],
                     checkpoints: Sequence[Checkpoint]) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            for table in ("audit_records", "audit_checkpoints"):
                for verb in ("update", "delete"):
                    conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
            conn.execute("BEGIN")
            conn.execute("DELETE FROM audit_records")
            conn.execute("DELETE FROM audit_checkpoints")
            conn.executemany(
                "INSERT INTO audit_records (writer, seq, time, kind, hash, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r["writer"], r["seq"], r["time"], r["kind"], r["hash"], stored_line(r).line)
                 for r in records])
            conn.executemany(
                "INSERT INTO audit_checkpoints (writer, seq, hash, time, kid, jws) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(c.writer, c.seq, c.hash, c.time, c.kid, c.jws) for c in checkpoints])
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def raw_text(self) -> bytes:
        parts = [self.path.read_bytes()]
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists():
            parts.append(wal.read_bytes())
        return b"".join(parts)


class PostgresBackend:
    name = "postgres"

    def __init__(self, server_url: str, schema: str) -> None:
        self.server_url, self.schema = server_url, schema
        self.url = f"{server_url}?schema={schema}"

    async def open(self) -> AuditSink:
        return await PostgresAuditSink.open(self.url)

    async def _connect(self) -> Any:
        return await asyncpg.connect(self.server_url,
                                     server_settings={"search_path": f'"{self.schema}"'})

    async def tamper(self, records: Sequence[dict[str, Any]],
                     checkpoints: Sequence[Checkpoint]) -> None:
        conn = await self._connect()
        try:
            async with conn.transaction():
                # a superuser can switch triggers off for the session
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute("DELETE FROM audit_records")
                await conn.execute("DELETE FROM audit_checkpoints")
                await conn.executemany(
                    "INSERT INTO audit_records (writer, seq, time, kind, hash, record) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    [(r["writer"], r["seq"], r["time"], r["kind"], r["hash"],
                      stored_line(r).line) for r in records])
                await conn.executemany(
                    "INSERT INTO audit_checkpoints (writer, seq, hash, time, kid, jws) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    [(c.writer, c.seq, c.hash, c.time, c.kid, c.jws) for c in checkpoints])
        finally:
            await conn.close()

    async def raw_text(self) -> bytes:
        conn = await self._connect()
        try:
            rows = await conn.fetch("SELECT record AS t FROM audit_records UNION ALL "
                                    "SELECT jws FROM audit_checkpoints")
        finally:
            await conn.close()
        return "\n".join(r["t"] for r in rows).encode("utf-8")


class JsonlBackend:
    name = "jsonl"

    def __init__(self, tmp: Path) -> None:
        self.path = tmp / "audit.jsonl"

    async def open(self) -> AuditSink:
        return await JsonlSink.open(self.path)

    async def tamper(self, records: Sequence[dict[str, Any]],
                     checkpoints: Sequence[Checkpoint]) -> None:
        lines = [stored_line(r).line for r in records]
        lines += [canonicalize_text(c.to_json()) for c in checkpoints]
        self.path.write_text("".join(line + "\n" for line in lines), "utf-8")

    async def raw_text(self) -> bytes:
        return self.path.read_bytes()

