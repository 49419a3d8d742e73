"""``backend``: each audit store (SQLite, PostgreSQL, JSONL); ``signer``: a fresh key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.audit.keys import AuditSigner
from tests.audit.backends import Backend, JsonlBackend, PostgresBackend, SqliteBackend
from tests.storage.services import drop_schema, require_postgres, unique_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "jsonl"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path)
        return
    if request.param == "jsonl":
        yield JsonlBackend(tmp_path)
        return
    server_url = await require_postgres()
    schema = unique_schema()
    try:
        yield PostgresBackend(server_url, schema)
    finally:
        await drop_schema(server_url, schema)


@pytest.fixture
def signer() -> AuditSigner:
    return AuditSigner.generate()
