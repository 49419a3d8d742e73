"""The storage interface of the authorization server: records and one async ``Store`` protocol.

Secrets never reach a store in clear: authorization codes, refresh tokens, session ids, pending
request ids and client secrets arrive already hashed (``hash_secret``). Every value
Bastion generates has at least 192 bits of entropy, so a plain SHA-256 is the right hash (a slow
password hash adds nothing there and would cost every token request).

(A CSRF token is kept in clear with its pending request: the page must be re-rendered on a
repeated GET, and the token is worthless without the browser cookie it is bound to.)

Atomicity contracts (every implementation must keep them across processes):

- ``redeem_code`` marks a code used and returns ``"ok"`` to exactly one caller; every other
  caller gets ``"replayed"`` with the record, so it can revoke what the code produced.
- ``rotate_refresh_token`` decides, in one transaction, between rotation, a retry inside the
  grace window, and reuse (which revokes the whole family and its access tokens).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "AlreadyExists",
    "AuthorizationCode",
    "ClientRecord",
    "ClientSource",
    "CodeRedemption",
    "Consent",
    "PendingAuthorization",
    "RefreshRotation",
    "RefreshToken",
    "Session",
    "Store",
    "StoreError",
    "UserRecord",
    "expired_rows",
    "hash_secret",
]


def hash_secret(value: str) -> str:
    """SHA-256 hex of a high-entropy secret; what stores keep instead of the secret."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class StoreError(Exception):
    """Storage failed; callers fail closed (invariant 4)."""


class AlreadyExists(StoreError):
    pass


@dataclass(frozen=True, slots=True)
class UserRecord:
    username: str
    subject: str
    password_hash: str
    created_at: float


ClientSource = Literal["config", "cli", "dcr", "cimd"]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    client_name: str | None
    redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scope: str | None
    application_type: str | None
    source: ClientSource
    created_at: float
    secret_hash: str | None = None
    jwks_uri: str | None = None
    last_used_at: float | None = None
    client_uri: str | None = None

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"  # noqa: S105

    @property
    def verified(self) -> bool:
        """Registered by an operator (config or CLI), not by whoever asked (DCR, CIMD)."""
        return self.source in ("config", "cli")


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    code_hash: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    subject: str
    created_at: float
    expires_at: float
    # Decided when the code is made, so a replay knows what to revoke without a race.
    family_id: str
    access_jti: str
    issue_refresh: bool


@dataclass(frozen=True, slots=True)
class CodeRedemption:
    status: Literal["ok", "replayed", "unknown"]
    code: AuthorizationCode | None


@dataclass(frozen=True, slots=True)
class RefreshToken:
    token_hash: str
    family_id: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]
    # Every resource the grant covers; an access token's audience is one of them.
    resources: tuple[str, ...]
    created_at: float
    expires_at: float
    used_at: float | None = None
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class RefreshRotation:
    """``rotated``: first use. ``grace``: a retry within the grace window, a new token issued.
    ``reused``: used again after the window: the family is now revoked. ``invalid``: unknown,
    expired or already revoked."""

    status: Literal["rotated", "grace", "reused", "invalid"]
    token: RefreshToken | None


@dataclass(frozen=True, slots=True)
class Consent:
    subject: str
    client_id: str
    resource: str
    scopes: tuple[str, ...]
    granted_at: float


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A validated authorization request waiting for login and consent."""

    request_hash: str
    csrf_token: str
    browser_hash: str
    client_id: str
    redirect_uri: str
    state: str | None
    code_challenge: str
    resource: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Session:
    session_hash: str
    subject: str
    username: str
    created_at: float
    expires_at: float


class Store(Protocol):
    """State of the authorization server. All methods are coroutines; all fail with StoreError."""

    async def close(self) -> None: ...

    # users
    async def create_user(self, user: UserRecord) -> None: ...
    async def get_user(self, username: str) -> UserRecord | None: ...
    async def list_users(self) -> list[UserRecord]: ...
    async def delete_user(self, username: str) -> bool: ...

    # clients (registered at run time: CLI and DCR; config clients live in the config)
    async def put_client(self, client: ClientRecord) -> None: ...
    async def get_client(self, client_id: str) -> ClientRecord | None: ...
    async def list_clients(self) -> list[ClientRecord]: ...
    async def delete_client(self, client_id: str) -> bool: ...
    async def touch_client(self, client_id: str, now: float) -> None: ...
    async def delete_unused_clients(self, source: ClientSource, created_before: float) -> int: ...

    # authorization codes
    async def save_code(self, code: AuthorizationCode) -> None: ...
    async def redeem_code(self, code_hash: str, now: float) -> CodeRedemption: ...

    # refresh tokens and the access tokens issued from a grant
    async def create_refresh_token(self, token: RefreshToken) -> None: ...
    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None: ...
    async def rotate_refresh_token(
        self, old_hash: str, new_hash: str, new_expires_at: float, now: float, grace: float
    ) -> RefreshRotation: ...
    async def revoke_family(self, family_id: str, now: float) -> None: ...
    async def record_access_token(
        self, jti: str, family_id: str | None, expires_at: float
    ) -> None: ...
    async def revoke_access_token(self, jti: str, expires_at: float) -> None: ...
    async def is_access_token_revoked(self, jti: str) -> bool: ...

    # consent
    async def grant_consent(self, consent: Consent) -> None: ...
    async def get_consent(self, subject: str, client_id: str, resource: str) -> Consent | None: ...
    async def list_consents(self, subject: str | None = None) -> list[Consent]: ...
    async def revoke_consents(self, subject: str, client_id: str | None = None) -> int: ...

    # browser flow: pending requests and login sessions
    async def save_pending(self, pending: PendingAuthorization) -> None: ...
    async def get_pending(self, request_hash: str, now: float) -> PendingAuthorization | None: ...
    async def consume_pending(self, request_hash: str) -> bool: ...
    async def create_session(self, session: Session) -> None: ...
    async def get_session(self, session_hash: str, now: float) -> Session | None: ...
    async def delete_session(self, session_hash: str) -> None: ...

    async def purge_expired(self, now: float) -> int:
        """Delete what has expired (see ``expired_rows``); return the number of rows."""
        ...


# Codes are kept a day past expiry so that a replay is still recognised and revokes what the
# code produced; a revoked grant's family row as long, for the same reason.
REPLAY_MEMORY_SECONDS = 86400.0


def expired_rows(now: float) -> tuple[tuple[str, float], ...]:
    """What ``purge_expired`` deletes, for the SQL stores (the tables are named alike): each
    statement with its one parameter, written ``%s``."""
    kept_until = now - REPLAY_MEMORY_SECONDS
    return (
        ("DELETE FROM auth_codes WHERE expires_at < %s", kept_until),
        ("DELETE FROM pending_authorizations WHERE expires_at < %s", now),
        ("DELETE FROM sessions WHERE expires_at < %s", now),
        ("DELETE FROM access_tokens WHERE expires_at < %s", now),
        ("DELETE FROM refresh_tokens WHERE expires_at < %s", now),
        # a grant none of whose tokens is left
        ("DELETE FROM refresh_families WHERE (revoked_at IS NULL OR revoked_at < %s) "
         "AND NOT EXISTS (SELECT 1 FROM refresh_tokens t "
         "WHERE t.family_id = refresh_families.family_id) "
         "AND NOT EXISTS (SELECT 1 FROM access_tokens a "
         "WHERE a.family_id = refresh_families.family_id)", kept_until),
    )
