"""Storage of authorization-server state behind one interface (``Store``).

``open_store(None, data_dir)`` gives the embedded SQLite store at ``<data_dir>/bastion.db``
(the folder 0700, the database and its side files 0600);
``sqlite:///path/to.db`` names another file. ``postgresql://user@host/db?schema=name`` (or
``postgres://``) gives the PostgreSQL store, its tables in schema ``name`` (optional).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from bastion.private_files import private_dir
from bastion.storage.base import (
    AlreadyExists,
    AuthorizationCode,
    ClientRecord,
    CodeRedemption,
    Consent,
    PendingAuthorization,
    RefreshRotation,
    RefreshToken,
    Session,
    Store,
    StoreError,
    UserRecord,
    hash_secret,
)
from bastion.storage.sqlite import SqliteStore

__all__ = [
    "AlreadyExists",
    "AuthorizationCode",
    "ClientRecord",
    "CodeRedemption",
    "Consent",
    "PendingAuthorization",
    "RefreshRotation",
    "RefreshToken",
    "Session",
    "SqliteStore",
    "Store",
    "StoreError",
    "UserRecord",
    "hash_secret",
    "open_store",
]

DEFAULT_DB_NAME = "bastion.db"


async def open_store(url: str | None, data_dir: Path) -> Store:
    """Open (and migrate) the store named by ``url``; ``None`` means SQLite in ``data_dir``."""
    if url is None or url == "":
        private_dir(data_dir)
        return await SqliteStore.open(data_dir / DEFAULT_DB_NAME)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        raw = unquote(parts.path)
        path = Path(raw)
        if not path.is_absolute():
            private_dir(data_dir)
            path = data_dir / raw.lstrip("/")
        return await SqliteStore.open(path)
    if parts.scheme in ("postgres", "postgresql"):
        try:  # asyncpg is an optional dependency
            from bastion.storage.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                "a PostgreSQL storage_url needs asyncpg: install bastion-mcp[postgres]"
            ) from exc
        return await PostgresStore.open(url)
    raise StoreError(f"unsupported storage_url scheme {parts.scheme!r}")
