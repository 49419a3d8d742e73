"""The storage backends the same behavioural tests run against, and what a test may need to
see beneath the ``Store`` interface (raw contents, the schema version)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from bastion.storage import Store, open_store

__all__ = ["Backend", "PostgresBackend", "SqliteBackend"]


class Backend(Protocol):
    name: str
    data_dir: Path

    @property
    def url(self) -> str: ...

    async def open(self) -> Store: ...
    async def dump(self) -> bytes: ...
    async def set_schema_version(self, version: int) -> None: ...


@dataclass
class SqliteBackend:
    data_dir: Path
    name: str = "sqlite"

    @property
    def path(self) -> Path:
        return self.data_dir / "bastion.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    async def open(self) -> Store:
        return await open_store(self.url, self.data_dir)

    async def dump(self) -> bytes:
        """Every byte on disk: the database, its WAL and shared-memory files."""
        return b"".join(p.read_bytes() for p in sorted(self.data_dir.glob("bastion.db*")))

    async def set_schema_version(self, version: int) -> None:
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
            conn.commit()
        finally:
            conn.close()


@dataclass
class PostgresBackend:
    server_url: str
    schema: str
    data_dir: Path
    name: str = "postgres"

    @property
    def url(self) -> str:
        return f"{self.server_url}?schema={self.schema}"

    async def open(self) -> Store:
        return await open_store(self.url, self.data_dir)

    async def dump(self) -> bytes:
        """Every row of every table in the schema, as PostgreSQL's text form of the row."""
        conn = await asyncpg.connect(self.server_url)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                self.schema,
            )
            assert tables, f"no tables in schema {self.schema}"
            out: list[str] = []
            for t in tables:
                rows = await conn.fetch(
                    f'SELECT r::text AS row FROM "{self.schema}"."{t["table_name"]}" r'  # noqa: S608
                )
                out.extend(r["row"] for r in rows)
            return "\n".join(out).encode()
        finally:
            await conn.close()

    async def set_schema_version(self, version: int) -> None:
        conn = await asyncpg.connect(self.server_url)
        try:
            await conn.execute(
                f'INSERT INTO "{self.schema}".schema_version VALUES ($1)', version  # noqa: S608
            )
        finally:
            await conn.close()
