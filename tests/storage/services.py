"""External services the storage tests need: skipped when absent, a failure on CI (``CI=true``).

PostgreSQL is looked for at ``BASTION_TEST_POSTGRES_URL`` (default: the local server, trust
auth, database ``test``). Each test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets

import asyncpg
import pytest

__all__ = ["POSTGRES_URL", "drop_schema", "require_postgres", "unique_schema"]

POSTGRES_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_CONNECT_TIMEOUT = 5.0

# None: not probed yet; "": reachable; otherwise why not (probed once per process).
_postgres_problem: str | None = None


async def _probe_postgres() -> str:
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return ""


async def require_postgres() -> str:
    """The PostgreSQL URL to test against. Skips the test when the server cannot be reached,
    except on CI (``CI=true``), where it fails: there the PostgreSQL tests must run."""
    global _postgres_problem
    if _postgres_problem is None:
        _postgres_problem = await _probe_postgres()
    if not _postgres_problem:
        return POSTGRES_URL
    reason = (f"PostgreSQL is not reachable at {POSTGRES_URL} ({_postgres_problem}); "
              "set BASTION_TEST_POSTGRES_URL or start the server")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: the PostgreSQL tests must run)")
    pytest.skip(reason)


def unique_schema() -> str:
    return f"bastion_test_{secrets.token_hex(6)}"


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url, timeout=_CONNECT_TIMEOUT)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
