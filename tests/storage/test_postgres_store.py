"""PostgreSQL specifics: URLs and schemas, connection failures, concurrent first starts. The
behaviour shared with SQLite is in ``test_store_contract.py`` and ``test_store_race.py``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bastion.storage import StoreError, UserRecord, open_store
from bastion.storage.postgres import SCHEMA_VERSION, PostgresStore, split_schema
from tests.storage.services import drop_schema, require_postgres, unique_schema


def test_split_schema_takes_out_only_the_schema() -> None:
    assert split_schema("postgresql://u@h/db?schema=s1&sslmode=disable") == (
        "postgresql://u@h/db?sslmode=disable", "s1")
    assert split_schema("postgres://u:p%40ss@h:5433/db") == ("postgres://u:p%40ss@h:5433/db", None)
    with pytest.raises(StoreError, match="more than one"):
        split_schema("postgresql://h/db?schema=a&schema=b")


@pytest.mark.parametrize("schema", ["Upper", "semi;colon", 'quo"te', "1digit", "a" * 64, "a-b"])
async def test_schema_names_are_restricted(schema: str) -> None:
    with pytest.raises(StoreError, match="invalid PostgreSQL schema name"):
        await PostgresStore.open("postgresql://127.0.0.1:1/db", schema=schema)


async def test_unreachable_server_is_a_store_error_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await open_store("postgresql://bastion:hunter2-secret@127.0.0.1:1/db", tmp_path)
    assert "hunter2-secret" not in str(caught.value)


@pytest.mark.postgres
async def test_tables_live_in_the_named_schema(tmp_path: Path) -> None:
    url = await require_postgres()
    schema = unique_schema()
    try:
        store = await open_store(f"{url}?schema={schema}", tmp_path)
        assert isinstance(store, PostgresStore) and store.schema == schema
        await store.create_user(UserRecord("alice", "s1", "h", 1.0))
        await store.close()
        conn = await asyncpg.connect(url)
        try:
            tables = {r["table_name"] for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema)}
            version = await conn.fetchval(
                f'SELECT MAX(version) FROM "{schema}".schema_version')  # noqa: S608
        finally:
            await conn.close()
        assert {"users", "clients", "auth_codes", "refresh_tokens", "refresh_families",
                "access_tokens", "consents", "pending_authorizations", "sessions",
                "schema_version"} <= tables
        assert version == SCHEMA_VERSION
    finally:
        await drop_schema(url, schema)


@pytest.mark.postgres
async def test_concurrent_first_starts_migrate_once(tmp_path: Path) -> None:
    url = await require_postgres()
    schema = unique_schema()
    try:
        stores = await asyncio.gather(*(
            PostgresStore.open(url, schema=schema, pool_size=2) for _ in range(4)
        ))
        for s in stores:
            await s.close()
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch(
                f'SELECT version FROM "{schema}".schema_version')  # noqa: S608
        finally:
            await conn.close()
        assert [r["version"] for r in versions] == [SCHEMA_VERSION]
    finally:
        await drop_schema(url, schema)
