"""SQLite store: the embedded default, in ``<data_dir>/bastion.db``.

Why stdlib ``sqlite3`` run through ``asyncio.to_thread`` rather than aiosqlite: each operation
is one synchronous function that opens and commits its own transaction (``BEGIN IMMEDIATE`` for
the read-decide-write ones), run whole on a worker thread under one lock. With aiosqlite the
statements of one logical operation are separate awaits on a shared connection, and two
coroutines can interleave inside one transaction. ``BEGIN IMMEDIATE`` takes SQLite's write lock
before reading, which makes code redemption and refresh rotation atomic across processes too;
``busy_timeout`` makes a second process wait instead of failing. WAL lets readers run alongside.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bastion.private_files import create_private_file, private_dir, private_file
from bastion.storage.base import (
    AlreadyExists,
    AuthorizationCode,
    ClientRecord,
    ClientSource,
    CodeRedemption,
    Consent,
    PendingAuthorization,
    RefreshRotation,
    RefreshToken,
    Session,
    StoreError,
    UserRecord,
    expired_rows,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    subject TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL,
    secret_hash TEXT,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL
);
CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    revoked_at REAL
);
CREATE TABLE access_tokens (
    jti TEXT PRIMARY KEY,
    family_id TEXT,
    expires_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE TABLE consents (
    subject TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted_at REAL NOT NULL,
    PRIMARY KEY (subject, client_id, resource)
);
CREATE TABLE pending_authorizations (
    request_hash TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    username TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}
# Files SQLite keeps beside the database, which hold its data as well.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _client_to_json(c: ClientRecord) -> str:
    return json.dumps({
        "client_name": c.client_name,
        "redirect_uris": list(c.redirect_uris),
        "token_endpoint_auth_method": c.token_endpoint_auth_method,
        "grant_types": list(c.grant_types),
        "response_types": list(c.response_types),
        "scope": c.scope,
        "application_type": c.application_type,
        "jwks_uri": c.jwks_uri,
        "client_uri": c.client_uri,
    })


def _client_from_row(row: sqlite3.Row) -> ClientRecord:
    m = json.loads(row["metadata"])
    return ClientRecord(
        client_id=row["client_id"],
        client_name=m.get("client_name"),
        redirect_uris=tuple(m.get("redirect_uris", ())),
        token_endpoint_auth_method=m["token_endpoint_auth_method"],
        grant_types=tuple(m.get("grant_types", ())),
        response_types=tuple(m.get("response_types", ())),
        scope=m.get("scope"),
        application_type=m.get("application_type"),
        source=row["source"],
        created_at=row["created_at"],
        secret_hash=row["secret_hash"],
        jwks_uri=m.get("jwks_uri"),
        last_used_at=row["last_used_at"],
        client_uri=m.get("client_uri"),
    )


def _code_to_json(c: AuthorizationCode) -> str:
    return json.dumps({
        "client_id": c.client_id, "redirect_uri": c.redirect_uri,
        "code_challenge": c.code_challenge, "resource": c.resource, "scopes": list(c.scopes),
        "subject": c.subject, "created_at": c.created_at, "family_id": c.family_id,
        "access_jti": c.access_jti, "issue_refresh": c.issue_refresh,
    })


def _code_from_row(row: sqlite3.Row) -> AuthorizationCode:
    d = json.loads(row["data"])
    return AuthorizationCode(
        code_hash=row["code_hash"], client_id=d["client_id"], redirect_uri=d["redirect_uri"],
        code_challenge=d["code_challenge"], resource=d["resource"], scopes=tuple(d["scopes"]),
        subject=d["subject"], created_at=d["created_at"], expires_at=row["expires_at"],
        family_id=d["family_id"], access_jti=d["access_jti"], issue_refresh=d["issue_refresh"],
    )


def _rt_to_json(t: RefreshToken) -> str:
    return json.dumps({
        "client_id": t.client_id, "subject": t.subject, "scopes": list(t.scopes),
        "resources": list(t.resources),
    })


def _rt_from_row(row: sqlite3.Row, revoked: bool) -> RefreshToken:
    d = json.loads(row["data"])
    return RefreshToken(
        token_hash=row["token_hash"], family_id=row["family_id"], client_id=d["client_id"],
        subject=d["subject"], scopes=tuple(d["scopes"]), resources=tuple(d["resources"]),
        created_at=row["created_at"], expires_at=row["expires_at"], used_at=row["used_at"],
        revoked=revoked,
    )


def _pending_to_json(p: PendingAuthorization) -> str:
    return json.dumps({
        "csrf_token": p.csrf_token, "browser_hash": p.browser_hash, "client_id": p.client_id,
        "redirect_uri": p.redirect_uri, "state": p.state, "code_challenge": p.code_challenge,
        "resource": p.resource, "scopes": list(p.scopes), "created_at": p.created_at,
    })


def _pending_from_row(row: sqlite3.Row) -> PendingAuthorization:
    d = json.loads(row["data"])
    return PendingAuthorization(
        request_hash=row["request_hash"], csrf_token=d["csrf_token"],
        browser_hash=d["browser_hash"], client_id=d["client_id"],
        redirect_uri=d["redirect_uri"], state=d["state"], code_challenge=d["code_challenge"],
        resource=d["resource"], scopes=tuple(d["scopes"]), created_at=d["created_at"],
        expires_at=row["expires_at"],
    )


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        store = cls(path)
        await asyncio.to_thread(store._open_sync)
        return store

    def _open_sync(self) -> None:
        try:
            if not self.path.parent.is_dir():
                private_dir(self.path.parent)
            # SQLite gives its -wal and -shm files the database file's mode: creating the
            # database 0600 first makes all three private (it would follow the umask, 0644).
            create_private_file(self.path)
            for suffix in _SIDE_FILES:
                private_file(self.path.with_name(self.path.name + suffix))
        except OSError as exc:
            raise StoreError(f"cannot create the database {self.path}: {exc}") from exc
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0]) if row[0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this Bastion "
                    f"({SCHEMA_VERSION})"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        def _close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(_close)

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        def call() -> T:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise StoreError("the store is closed")
                try:
                    if not write:
                        return fn(conn)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return result
                except sqlite3.IntegrityError as exc:
                    raise AlreadyExists(str(exc)) from exc
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite: {exc}") from exc

        return await asyncio.to_thread(call)

    # --- users -----------------------------------------------------------------------------

    async def create_user(self, user: UserRecord) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO users (username, subject, password_hash, created_at) "
                "VALUES (?, ?, ?, ?)",
                (user.username, user.subject, user.password_hash, user.created_at),
            )

        await self._run(op, write=True)

    async def get_user(self, username: str) -> UserRecord | None:
        def op(c: sqlite3.Connection) -> UserRecord | None:
            r = c.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            return None if r is None else UserRecord(
                r["username"], r["subject"], r["password_hash"], r["created_at"]
            )

        return await self._run(op)

    async def list_users(self) -> list[UserRecord]:
        def op(c: sqlite3.Connection) -> list[UserRecord]:
            rows = c.execute("SELECT * FROM users ORDER BY username").fetchall()
            return [
                UserRecord(r["username"], r["subject"], r["password_hash"], r["created_at"])
                for r in rows
            ]

        return await self._run(op)

    async def delete_user(self, username: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            r = c.execute("SELECT subject FROM users WHERE username = ?", (username,)).fetchone()
            if r is None:
                return False
            c.execute("DELETE FROM users WHERE username = ?", (username,))
            c.execute("DELETE FROM sessions WHERE subject = ?", (r["subject"],))
            c.execute("DELETE FROM consents WHERE subject = ?", (r["subject"],))
            return True

        return await self._run(op, write=True)

    # --- clients ---------------------------------------------------------------------------

    async def put_client(self, client: ClientRecord) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO clients (client_id, metadata, secret_hash, source, created_at, "
                "last_used_at) VALUES (?, ?, ?, ?, ?, ?)",
                (client.client_id, _client_to_json(client), client.secret_hash, client.source,
                 client.created_at, client.last_used_at),
            )

        await self._run(op, write=True)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        def op(c: sqlite3.Connection) -> ClientRecord | None:
            r = c.execute("SELECT * FROM clients WHERE client_id = ?", (client_id,)).fetchone()
            return None if r is None else _client_from_row(r)

        return await self._run(op)

    async def list_clients(self) -> list[ClientRecord]:
        def op(c: sqlite3.Connection) -> list[ClientRecord]:
            rows = c.execute("SELECT * FROM clients ORDER BY created_at").fetchall()
            return [_client_from_row(r) for r in rows]

        return await self._run(op)

    async def delete_client(self, client_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute("DELETE FROM clients WHERE client_id = ?", (client_id,))
            c.execute("DELETE FROM consents WHERE client_id = ?", (client_id,))
            return cur.rowcount == 1

        return await self._run(op, write=True)

    async def touch_client(self, client_id: str, now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE clients SET last_used_at = ? WHERE client_id = ?", (now, client_id)
            )

        await self._run(op, write=True)

    async def delete_unused_clients(self, source: ClientSource, created_before: float) -> int:
        def op(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "DELETE FROM clients WHERE source = ? AND last_used_at IS NULL "
                "AND created_at < ?",
                (source, created_before),
            )
            return cur.rowcount

        return await self._run(op, write=True)

    # --- authorization codes ---------------------------------------------------------------

    async def save_code(self, code: AuthorizationCode) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO auth_codes (code_hash, data, expires_at, used_at) "
                "VALUES (?, ?, ?, NULL)",
                (code.code_hash, _code_to_json(code), code.expires_at),
            )

        await self._run(op, write=True)

    async def redeem_code(self, code_hash: str, now: float) -> CodeRedemption:
        def op(c: sqlite3.Connection) -> CodeRedemption:
            cur = c.execute(
                "UPDATE auth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
                (now, code_hash),
            )
            row = c.execute("SELECT * FROM auth_codes WHERE code_hash = ?", (code_hash,)).fetchone()
            if row is None:
                return CodeRedemption("unknown", None)
            return CodeRedemption("ok" if cur.rowcount == 1 else "replayed", _code_from_row(row))

        return await self._run(op, write=True)

    # --- refresh tokens --------------------------------------------------------------------

    async def create_refresh_token(self, token: RefreshToken) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO refresh_families (family_id, revoked_at) VALUES (?, NULL)",
                (token.family_id,),
            )
            c.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, data, created_at, expires_at,"
                " used_at) VALUES (?, ?, ?, ?, ?, NULL)",
                (token.token_hash, token.family_id, _rt_to_json(token), token.created_at,
                 token.expires_at),
            )

        await self._run(op, write=True)

    @staticmethod
    def _get_rt(c: sqlite3.Connection, token_hash: str) -> RefreshToken | None:
        row = c.execute(
            "SELECT t.*, f.revoked_at AS family_revoked FROM refresh_tokens t "
            "JOIN refresh_families f ON f.family_id = t.family_id WHERE t.token_hash = ?",
            (token_hash,),
        ).fetchone()
        return None if row is None else _rt_from_row(row, row["family_revoked"] is not None)

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        return await self._run(lambda c: self._get_rt(c, token_hash))

    @staticmethod
    def _revoke_family(c: sqlite3.Connection, family_id: str, now: float) -> None:
        c.execute(
            "UPDATE refresh_families SET revoked_at = ? WHERE family_id = ? "
            "AND revoked_at IS NULL",
            (now, family_id),
        )
        c.execute(
            "INSERT OR IGNORE INTO refresh_families (family_id, revoked_at) VALUES (?, ?)",
            (family_id, now),
        )
        c.execute("UPDATE access_tokens SET revoked = 1 WHERE family_id = ?", (family_id,))

    async def rotate_refresh_token(
        self, old_hash: str, new_hash: str, new_expires_at: float, now: float, grace: float
    ) -> RefreshRotation:
        def op(c: sqlite3.Connection) -> RefreshRotation:
            old = self._get_rt(c, old_hash)
            if old is None or old.revoked or old.expires_at <= now:
                return RefreshRotation("invalid", old)
            if old.used_at is not None and now - old.used_at >= grace:
                self._revoke_family(c, old.family_id, now)
                return RefreshRotation("reused", old)
            status: Any = "rotated" if old.used_at is None else "grace"
            if old.used_at is None:
                cur = c.execute(
                    "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? "
                    "AND used_at IS NULL",
                    (now, old_hash),
                )
                if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; fail closed
                    return RefreshRotation("invalid", old)
            c.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, data, created_at, expires_at,"
                " used_at) VALUES (?, ?, ?, ?, ?, NULL)",
                (new_hash, old.family_id, _rt_to_json(old), now, new_expires_at),
            )
            return RefreshRotation(status, old)

        return await self._run(op, write=True)

    async def revoke_family(self, family_id: str, now: float) -> None:
        await self._run(lambda c: self._revoke_family(c, family_id, now), write=True)

    async def record_access_token(
        self, jti: str, family_id: str | None, expires_at: float
    ) -> None:
        def op(c: sqlite3.Connection) -> None:
            revoked = 0
            if family_id is not None:
                f = c.execute(
                    "SELECT revoked_at FROM refresh_families WHERE family_id = ?", (family_id,)
                ).fetchone()
                revoked = int(f is not None and f["revoked_at"] is not None)
            c.execute(
                "INSERT OR IGNORE INTO access_tokens (jti, family_id, expires_at, revoked) "
                "VALUES (?, ?, ?, ?)",
                (jti, family_id, expires_at, revoked),
            )

        await self._run(op, write=True)

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO access_tokens (jti, family_id, expires_at, revoked) "
                "VALUES (?, NULL, ?, 1) ON CONFLICT (jti) DO UPDATE SET revoked = 1",
                (jti, expires_at),
            )

        await self._run(op, write=True)

    async def is_access_token_revoked(self, jti: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            r = c.execute("SELECT revoked FROM access_tokens WHERE jti = ?", (jti,)).fetchone()
            return r is not None and bool(r["revoked"])

        return await self._run(op)

    # --- consent ---------------------------------------------------------------------------

    async def grant_consent(self, consent: Consent) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO consents (subject, client_id, resource, scope, granted_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (subject, client_id, resource) "
                "DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
                (consent.subject, consent.client_id, consent.resource,
                 " ".join(sorted(set(consent.scopes))), consent.granted_at),
            )

        await self._run(op, write=True)

    @staticmethod
    def _consent(r: sqlite3.Row) -> Consent:
        return Consent(
            r["subject"], r["client_id"], r["resource"],
            tuple(s for s in str(r["scope"]).split(" ") if s), r["granted_at"],
        )

    async def get_consent(self, subject: str, client_id: str, resource: str) -> Consent | None:
        def op(c: sqlite3.Connection) -> Consent | None:
            r = c.execute(
                "SELECT * FROM consents WHERE subject = ? AND client_id = ? AND resource = ?",
                (subject, client_id, resource),
            ).fetchone()
            return None if r is None else self._consent(r)

        return await self._run(op)

    async def list_consents(self, subject: str | None = None) -> list[Consent]:
        def op(c: sqlite3.Connection) -> list[Consent]:
            if subject is None:
                rows = c.execute("SELECT * FROM consents ORDER BY granted_at").fetchall()
            else:
                rows = c.execute(
                    "SELECT * FROM consents WHERE subject = ? ORDER BY granted_at", (subject,)
                ).fetchall()
            return [self._consent(r) for r in rows]

        return await self._run(op)

    async def revoke_consents(self, subject: str, client_id: str | None = None) -> int:
        def op(c: sqlite3.Connection) -> int:
            if client_id is None:
                cur = c.execute("DELETE FROM consents WHERE subject = ?", (subject,))
            else:
                cur = c.execute(
                    "DELETE FROM consents WHERE subject = ? AND client_id = ?",
                    (subject, client_id),
                )
            return cur.rowcount

        return await self._run(op, write=True)

    # --- pending requests and sessions -------------------------------------------------------

    async def save_pending(self, pending: PendingAuthorization) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO pending_authorizations (request_hash, data, expires_at) "
                "VALUES (?, ?, ?)",
                (pending.request_hash, _pending_to_json(pending), pending.expires_at),
            )

        await self._run(op, write=True)

    async def get_pending(self, request_hash: str, now: float) -> PendingAuthorization | None:
        def op(c: sqlite3.Connection) -> PendingAuthorization | None:
            r = c.execute(
                "SELECT * FROM pending_authorizations WHERE request_hash = ? AND expires_at > ?",
                (request_hash, now),
            ).fetchone()
            return None if r is None else _pending_from_row(r)

        return await self._run(op)

    async def consume_pending(self, request_hash: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "DELETE FROM pending_authorizations WHERE request_hash = ?", (request_hash,)
            )
            return cur.rowcount == 1

        return await self._run(op, write=True)

    async def create_session(self, session: Session) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO sessions (session_hash, subject, username, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (session.session_hash, session.subject, session.username, session.created_at,
                 session.expires_at),
            )

        await self._run(op, write=True)

    async def get_session(self, session_hash: str, now: float) -> Session | None:
        def op(c: sqlite3.Connection) -> Session | None:
            r = c.execute(
                "SELECT * FROM sessions WHERE session_hash = ? AND expires_at > ?",
                (session_hash, now),
            ).fetchone()
            return None if r is None else Session(
                r["session_hash"], r["subject"], r["username"], r["created_at"], r["expires_at"]
            )

        return await self._run(op)

    async def delete_session(self, session_hash: str) -> None:
        await self._run(
            lambda c: c.execute("DELETE FROM sessions WHERE session_hash = ?", (session_hash,)),
            write=True,
        )

    async def purge_expired(self, now: float) -> int:
        def op(c: sqlite3.Connection) -> int:
            deleted = 0
            for statement, bound in expired_rows(now):
                deleted += c.execute(statement.replace("%s", "?"), (bound,)).rowcount
            return deleted

        return await self._run(op, write=True)
