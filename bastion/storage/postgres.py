"""PostgreSQL store, on asyncpg with a connection pool, for deployments with several processes.

How the atomicity contracts of ``Store`` hold across processes (READ COMMITTED, no retries):

- ``redeem_code`` is one ``UPDATE ... WHERE used_at IS NULL RETURNING``: a second writer waits
  for the first's row lock, re-checks the condition on the committed row and matches nothing.
- ``rotate_refresh_token`` runs in a transaction that first locks the family row, then the token
  row (``SELECT ... FOR UPDATE``, always in that order, so two rotations cannot deadlock), reads
  the committed state, decides, and marks the token used with ``WHERE used_at IS NULL`` checked
  by its row count. Every decision about one family is therefore serialised.
- ``record_access_token`` makes sure the family row exists and share-locks it before reading
  ``revoked_at``, so it cannot interleave with ``revoke_family`` (a code replay revoking the
  family while the first redemption is still recording its access token).

Tables live in the schema named by ``?schema=`` in the URL (or ``schema=``), set as the
connections' ``search_path``; without one, the server's default. Tests use a schema each.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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

__all__ = ["SCHEMA_VERSION", "PostgresStore", "split_schema"]

SCHEMA_VERSION = 1

# Unquoted-identifier syntax only: the name is interpolated (quoted) into DDL.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# One advisory lock key (its hashtext) for every Bastion migration, whatever the schema.
_MIGRATION_LOCK = "bastion.storage.postgres.migrate"
DEFAULT_POOL_SIZE = 10
ACQUIRE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0

_SCHEMA_V1 = """
CREATE TABLE users (
    username TEXT PRIMARY KEY,
    subject TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    client_name TEXT,
    redirect_uris TEXT[] NOT NULL,
    token_endpoint_auth_method TEXT NOT NULL,
    grant_types TEXT[] NOT NULL,
    response_types TEXT[] NOT NULL,
    scope TEXT,
    application_type TEXT,
    jwks_uri TEXT,
    client_uri TEXT,
    secret_hash TEXT,
    source TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION
);
CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    subject TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    family_id TEXT NOT NULL,
    access_jti TEXT NOT NULL,
    issue_refresh BOOLEAN NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE TABLE refresh_families (
    family_id TEXT PRIMARY KEY,
    revoked_at DOUBLE PRECISION
);
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    resources TEXT[] NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE TABLE access_tokens (
    jti TEXT PRIMARY KEY,
    family_id TEXT,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE TABLE consents (
    subject TEXT NOT NULL,
    client_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    granted_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (subject, client_id, resource)
);
CREATE TABLE pending_authorizations (
    request_hash TEXT PRIMARY KEY,
    csrf_token TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    state TEXT,
    code_challenge TEXT NOT NULL,
    resource TEXT NOT NULL,
    scopes TEXT[] NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    username TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);
CREATE INDEX access_tokens_expiry ON access_tokens (expires_at);
CREATE INDEX pending_authorizations_expiry ON pending_authorizations (expires_at);
CREATE INDEX sessions_expiry ON sessions (expires_at);
CREATE INDEX sessions_subject ON sessions (subject);
CREATE INDEX consents_client ON consents (client_id);
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}

Connection = Any  # asyncpg ships no type information
Row = Mapping[str, Any]


def split_schema(url: str) -> tuple[str, str | None]:
    """Take Bastion's own ``schema`` query parameter out of a PostgreSQL URL (asyncpg would send
    it to the server as a setting)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    if len(schemas) > 1:
        raise StoreError("storage_url names more than one schema")
    return urlunsplit(parts._replace(query=urlencode(rest))), (schemas[0] if schemas else None)


def _rowcount(status: str) -> int:
    """asyncpg reports a command's status tag, e.g. ``DELETE 3`` or ``INSERT 0 1``."""
    return int(status.rsplit(" ", 1)[-1])


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


def _client(r: Row) -> ClientRecord:
    source: ClientSource = r["source"]
    return ClientRecord(
        client_id=r["client_id"], client_name=r["client_name"],
        redirect_uris=_tuple(r["redirect_uris"]),
        token_endpoint_auth_method=r["token_endpoint_auth_method"],
        grant_types=_tuple(r["grant_types"]), response_types=_tuple(r["response_types"]),
        scope=r["scope"], application_type=r["application_type"], source=source,
        created_at=r["created_at"], secret_hash=r["secret_hash"], jwks_uri=r["jwks_uri"],
        last_used_at=r["last_used_at"], client_uri=r["client_uri"],
    )


def _code(r: Row) -> AuthorizationCode:
    return AuthorizationCode(
        code_hash=r["code_hash"], client_id=r["client_id"], redirect_uri=r["redirect_uri"],
        code_challenge=r["code_challenge"], resource=r["resource"], scopes=_tuple(r["scopes"]),
        subject=r["subject"], created_at=r["created_at"], expires_at=r["expires_at"],
        family_id=r["family_id"], access_jti=r["access_jti"], issue_refresh=r["issue_refresh"],
    )


def _refresh(r: Row) -> RefreshToken:
    return RefreshToken(
        token_hash=r["token_hash"], family_id=r["family_id"], client_id=r["client_id"],
        subject=r["subject"], scopes=_tuple(r["scopes"]), resources=_tuple(r["resources"]),
        created_at=r["created_at"], expires_at=r["expires_at"], used_at=r["used_at"],
        revoked=r["family_revoked_at"] is not None,
    )


def _consent(r: Row) -> Consent:
    return Consent(r["subject"], r["client_id"], r["resource"], _tuple(r["scopes"]),
                   r["granted_at"])


def _pending(r: Row) -> PendingAuthorization:
    return PendingAuthorization(
        request_hash=r["request_hash"], csrf_token=r["csrf_token"],
        browser_hash=r["browser_hash"], client_id=r["client_id"],
        redirect_uri=r["redirect_uri"], state=r["state"], code_challenge=r["code_challenge"],
        resource=r["resource"], scopes=_tuple(r["scopes"]), created_at=r["created_at"],
        expires_at=r["expires_at"],
    )


def _session(r: Row) -> Session:
    return Session(r["session_hash"], r["subject"], r["username"], r["created_at"],
                   r["expires_at"])


_SELECT_REFRESH = (
    "SELECT t.*, f.revoked_at AS family_revoked_at FROM refresh_tokens t "
    "JOIN refresh_families f ON f.family_id = t.family_id WHERE t.token_hash = $1"
)
_INSERT_REFRESH = (
    "INSERT INTO refresh_tokens (token_hash, family_id, client_id, subject, scopes, resources, "
    "created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"
)
_ENSURE_FAMILY = (
    "INSERT INTO refresh_families (family_id, revoked_at) VALUES ($1, NULL) "
    "ON CONFLICT (family_id) DO NOTHING"
)


class PostgresStore:
    def __init__(self, pool: Any, schema: str | None) -> None:
        self._pool: Any = pool
        self.schema = schema

    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, pool_size: int = DEFAULT_POOL_SIZE
    ) -> PostgresStore:
        """Connect, create or migrate the schema, and return the store. ``schema`` (or the URL's
        ``?schema=``) names the PostgreSQL schema to keep the tables in; it is created if
        missing."""
        dsn, url_schema = split_schema(url)
        schema = schema or url_schema
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise StoreError(f"invalid PostgreSQL schema name {schema!r}")
        settings = {"search_path": f'"{schema}"'} if schema else {}
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT,
                server_settings=settings,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # The message names host and database but never the URL (it may hold a password).
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        store = cls(pool, schema)
        try:
            await store._migrate()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._transaction() as c:
            # Serialise concurrent first starts: CREATE TABLE / CREATE SCHEMA are not idempotent.
            await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _MIGRATION_LOCK)
            if self.schema is not None:
                exists = await c.fetchval(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema
                )
                if exists is None:  # checked first: CREATE needs a privilege a user may lack
                    await c.execute(f'CREATE SCHEMA "{self.schema}"')
            await c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = int(await c.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the PostgreSQL schema {self.schema or '(default)'} has version {current}, "
                    f"newer than this Bastion ({SCHEMA_VERSION})"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await c.execute(_MIGRATIONS[version])
                await c.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; driver and server failures become StoreError (fail closed)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is closed")
        try:
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(str(exc)) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreError(f"postgres: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _execute(self, query: str, *args: Any) -> int:
        async with self._connection() as c:
            return _rowcount(await c.execute(query, *args))

    async def _fetchrow(self, query: str, *args: Any) -> Row | None:
        async with self._connection() as c:
            row: Row | None = await c.fetchrow(query, *args)
            return row

    async def _fetch(self, query: str, *args: Any) -> list[Row]:
        async with self._connection() as c:
            rows: list[Row] = await c.fetch(query, *args)
            return rows

    # --- users -----------------------------------------------------------------------------

    async def create_user(self, user: UserRecord) -> None:
        await self._execute(
            "INSERT INTO users (username, subject, password_hash, created_at) "
            "VALUES ($1, $2, $3, $4)",
            user.username, user.subject, user.password_hash, user.created_at,
        )

    async def get_user(self, username: str) -> UserRecord | None:
        r = await self._fetchrow("SELECT * FROM users WHERE username = $1", username)
        return None if r is None else UserRecord(
            r["username"], r["subject"], r["password_hash"], r["created_at"]
        )

    async def list_users(self) -> list[UserRecord]:
        rows = await self._fetch("SELECT * FROM users ORDER BY username")
        return [UserRecord(r["username"], r["subject"], r["password_hash"], r["created_at"])
                for r in rows]

    async def delete_user(self, username: str) -> bool:
        async with self._transaction() as c:
            subject = await c.fetchval(
                "DELETE FROM users WHERE username = $1 RETURNING subject", username
            )
            if subject is None:
                return False
            await c.execute("DELETE FROM sessions WHERE subject = $1", subject)
            await c.execute("DELETE FROM consents WHERE subject = $1", subject)
            return True

    # --- clients ---------------------------------------------------------------------------

    async def put_client(self, client: ClientRecord) -> None:
        await self._execute(
            "INSERT INTO clients (client_id, client_name, redirect_uris, "
            "token_endpoint_auth_method, grant_types, response_types, scope, application_type, "
            "jwks_uri, client_uri, secret_hash, source, created_at, last_used_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            client.client_id, client.client_name, list(client.redirect_uris),
            client.token_endpoint_auth_method, list(client.grant_types),
            list(client.response_types), client.scope, client.application_type, client.jwks_uri,
            client.client_uri, client.secret_hash, client.source, client.created_at,
            client.last_used_at,
        )

    async def get_client(self, client_id: str) -> ClientRecord | None:
        r = await self._fetchrow("SELECT * FROM clients WHERE client_id = $1", client_id)
        return None if r is None else _client(r)

    async def list_clients(self) -> list[ClientRecord]:
        rows = await self._fetch("SELECT * FROM clients ORDER BY created_at, client_id")
        return [_client(r) for r in rows]

    async def delete_client(self, client_id: str) -> bool:
        async with self._transaction() as c:
            deleted = _rowcount(await c.execute(
                "DELETE FROM clients WHERE client_id = $1", client_id
            ))
            await c.execute("DELETE FROM consents WHERE client_id = $1", client_id)
            return deleted == 1

    async def touch_client(self, client_id: str, now: float) -> None:
        await self._execute(
            "UPDATE clients SET last_used_at = $1 WHERE client_id = $2", now, client_id
        )

    async def delete_unused_clients(self, source: ClientSource, created_before: float) -> int:
        return await self._execute(
            "DELETE FROM clients WHERE source = $1 AND last_used_at IS NULL "
            "AND created_at < $2",
            source, created_before,
        )

    # --- authorization codes ---------------------------------------------------------------

    async def save_code(self, code: AuthorizationCode) -> None:
        await self._execute(
            "INSERT INTO auth_codes (code_hash, client_id, redirect_uri, code_challenge, "
            "resource, scopes, subject, created_at, expires_at, family_id, access_jti, "
            "issue_refresh, used_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)",
            code.code_hash, code.client_id, code.redirect_uri, code.code_challenge,
            code.resource, list(code.scopes), code.subject, code.created_at, code.expires_at,
            code.family_id, code.access_jti, code.issue_refresh,
        )

    async def redeem_code(self, code_hash: str, now: float) -> CodeRedemption:
        async with self._connection() as c:
            won = await c.fetchrow(
                "UPDATE auth_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL "
                "RETURNING *",
                code_hash, now,
            )
            if won is not None:
                return CodeRedemption("ok", _code(won))
            row = await c.fetchrow("SELECT * FROM auth_codes WHERE code_hash = $1", code_hash)
            return CodeRedemption("unknown", None) if row is None else CodeRedemption(
                "replayed", _code(row)
            )

    # --- refresh tokens --------------------------------------------------------------------

    async def create_refresh_token(self, token: RefreshToken) -> None:
        async with self._transaction() as c:
            await c.execute(_ENSURE_FAMILY, token.family_id)
            await c.execute(
                _INSERT_REFRESH, token.token_hash, token.family_id, token.client_id,
                token.subject, list(token.scopes), list(token.resources), token.created_at,
                token.expires_at,
            )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        r = await self._fetchrow(_SELECT_REFRESH, token_hash)
        return None if r is None else _refresh(r)

    @staticmethod
    async def _revoke_family(c: Connection, family_id: str, now: float) -> None:
        await c.execute(
            "INSERT INTO refresh_families AS f (family_id, revoked_at) VALUES ($1, $2) "
            "ON CONFLICT (family_id) DO UPDATE SET revoked_at = COALESCE(f.revoked_at, $2)",
            family_id, now,
        )
        await c.execute("UPDATE access_tokens SET revoked = true WHERE family_id = $1", family_id)

    async def rotate_refresh_token(
        self, old_hash: str, new_hash: str, new_expires_at: float, now: float, grace: float
    ) -> RefreshRotation:
        async with self._transaction() as c:
            family_id = await c.fetchval(
                "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", old_hash
            )
            if family_id is None:
                return RefreshRotation("invalid", None)
            # Lock order: family, then token. Rotations of one family wait for each other here.
            await c.execute(
                "SELECT 1 FROM refresh_families WHERE family_id = $1 FOR UPDATE", family_id
            )
            row = await c.fetchrow(_SELECT_REFRESH + " FOR UPDATE OF t", old_hash)
            old = None if row is None else _refresh(row)
            if old is None or old.revoked or old.expires_at <= now:
                return RefreshRotation("invalid", old)
            if old.used_at is not None and now - old.used_at >= grace:
                await self._revoke_family(c, old.family_id, now)
                return RefreshRotation("reused", old)
            status: Literal["rotated", "grace"] = "rotated" if old.used_at is None else "grace"
            if old.used_at is None:
                marked = _rowcount(await c.execute(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 "
                    "AND used_at IS NULL",
                    now, old_hash,
                ))
                if marked != 1:  # cannot happen under the row lock; fail closed
                    return RefreshRotation("invalid", old)
            await c.execute(
                _INSERT_REFRESH, new_hash, old.family_id, old.client_id, old.subject,
                list(old.scopes), list(old.resources), now, new_expires_at,
            )
            return RefreshRotation(status, old)

    async def revoke_family(self, family_id: str, now: float) -> None:
        async with self._transaction() as c:
            await self._revoke_family(c, family_id, now)

    async def record_access_token(
        self, jti: str, family_id: str | None, expires_at: float
    ) -> None:
        async with self._transaction() as c:
            revoked = False
            if family_id is not None:
                # The family row, created if need be and share-locked, orders this insert with
                # any concurrent revoke_family: either it sees the revocation or is revoked by it.
                await c.execute(_ENSURE_FAMILY, family_id)
                revoked_at = await c.fetchval(
                    "SELECT revoked_at FROM refresh_families WHERE family_id = $1 FOR SHARE",
                    family_id,
                )
                revoked = revoked_at is not None
            await c.execute(
                "INSERT INTO access_tokens (jti, family_id, expires_at, revoked) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
                jti, family_id, expires_at, revoked,
            )

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        await self._execute(
            "INSERT INTO access_tokens (jti, family_id, expires_at, revoked) "
            "VALUES ($1, NULL, $2, true) ON CONFLICT (jti) DO UPDATE SET revoked = true",
            jti, expires_at,
        )

    async def is_access_token_revoked(self, jti: str) -> bool:
        r = await self._fetchrow("SELECT revoked FROM access_tokens WHERE jti = $1", jti)
        return r is not None and bool(r["revoked"])

    # --- consent ---------------------------------------------------------------------------

    async def grant_consent(self, consent: Consent) -> None:
        await self._execute(
            "INSERT INTO consents (subject, client_id, resource, scopes, granted_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, client_id, resource) "
            "DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
            consent.subject, consent.client_id, consent.resource,
            sorted(set(consent.scopes)), consent.granted_at,
        )

    async def get_consent(self, subject: str, client_id: str, resource: str) -> Consent | None:
        r = await self._fetchrow(
            "SELECT * FROM consents WHERE subject = $1 AND client_id = $2 AND resource = $3",
            subject, client_id, resource,
        )
        return None if r is None else _consent(r)

    async def list_consents(self, subject: str | None = None) -> list[Consent]:
        rows = await self._fetch(
            "SELECT * FROM consents WHERE $1::text IS NULL OR subject = $1 "
            "ORDER BY granted_at, subject, client_id, resource",
            subject,
        )
        return [_consent(r) for r in rows]

    async def revoke_consents(self, subject: str, client_id: str | None = None) -> int:
        return await self._execute(
            "DELETE FROM consents WHERE subject = $1 AND ($2::text IS NULL OR client_id = $2)",
            subject, client_id,
        )

    # --- pending requests and sessions -------------------------------------------------------

    async def save_pending(self, pending: PendingAuthorization) -> None:
        await self._execute(
            "INSERT INTO pending_authorizations (request_hash, csrf_token, browser_hash, "
            "client_id, redirect_uri, state, code_challenge, resource, scopes, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            pending.request_hash, pending.csrf_token, pending.browser_hash, pending.client_id,
            pending.redirect_uri, pending.state, pending.code_challenge, pending.resource,
            list(pending.scopes), pending.created_at, pending.expires_at,
        )

    async def get_pending(self, request_hash: str, now: float) -> PendingAuthorization | None:
        r = await self._fetchrow(
            "SELECT * FROM pending_authorizations WHERE request_hash = $1 AND expires_at > $2",
            request_hash, now,
        )
        return None if r is None else _pending(r)

    async def consume_pending(self, request_hash: str) -> bool:
        deleted = await self._execute(
            "DELETE FROM pending_authorizations WHERE request_hash = $1", request_hash
        )
        return deleted == 1

    async def create_session(self, session: Session) -> None:
        await self._execute(
            "INSERT INTO sessions (session_hash, subject, username, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            session.session_hash, session.subject, session.username, session.created_at,
            session.expires_at,
        )

    async def get_session(self, session_hash: str, now: float) -> Session | None:
        r = await self._fetchrow(
            "SELECT * FROM sessions WHERE session_hash = $1 AND expires_at > $2",
            session_hash, now,
        )
        return None if r is None else _session(r)

    async def delete_session(self, session_hash: str) -> None:
        await self._execute("DELETE FROM sessions WHERE session_hash = $1", session_hash)

    async def purge_expired(self, now: float) -> int:
        deleted = 0
        async with self._transaction() as c:
            for statement, bound in expired_rows(now):
                deleted += _rowcount(await c.execute(statement.replace("%s", "$1"), bound))
        return deleted
