"""A ``backend`` (and a ``store`` opened on it) for each storage implementation: every test
that takes one runs against SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion.storage import Store
from tests.storage.backends import Backend, PostgresBackend, SqliteBackend
from tests.storage.services import drop_schema, require_postgres, unique_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield SqliteBackend(tmp_path)
        return
    server_url = await require_postgres()
    schema = unique_schema()
    try:
        yield PostgresBackend(server_url, schema, tmp_path)
    finally:
        await drop_schema(server_url, schema)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = await backend.open()
    try:
        yield s
    finally:
        await s.close()
