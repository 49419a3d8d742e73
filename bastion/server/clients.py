"""Where clients come from, in the order MCP prefers: configuration, then run-time registrations
(``bastion clients add`` and DCR) in the store, then Client ID Metadata Documents (CIMD)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion import jsonlimits
from bastion.clock import Clock
from bastion.config.model import AuthorizationServerConfig, ClientConfig, SecretRef
from bastion.errors import InvalidClient, InvalidRequest
from bastion.oauth import cimd, rfc7523
from bastion.oauth.rfc7519 import unverified_claim
from bastion.storage.base import ClientRecord, Store, hash_secret

__all__ = [
    "CimdResolver",
    "ClientAuthentication",
    "ClientRegistry",
    "DocumentFetcher",
    "read_secret",
]


class DocumentFetcher(Protocol):
    """What the CIMD resolver needs from the SSRF-safe fetcher (``bastion.net``).

    ``get`` returns ``(status, headers, body)`` and raises any exception when the fetch is
    refused (private address, redirect, too large, too slow): the resolver fails closed.
    """

    async def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]: ...


def read_secret(ref: SecretRef) -> str:
    """A configured secret at request time; a missing one fails closed."""
    try:
        return ref.read()
    except LookupError:
        raise InvalidClient("the client's secret is not configured") from None


def _from_config(c: ClientConfig) -> ClientRecord:
    secret_hash = hash_secret(read_secret(c.secret)) if c.secret is not None else None
    return ClientRecord(
        client_id=c.client_id,
        client_name=c.client_name,
        redirect_uris=c.redirect_uris,
        token_endpoint_auth_method=c.token_endpoint_auth_method,
        grant_types=c.grant_types,
        response_types=("code",),
        scope=c.scope,
        application_type=None,
        source="config",
        created_at=0.0,
        secret_hash=secret_hash,
        jwks_uri=c.jwks_uri,
    )


@dataclass(slots=True)
class _Cached:
    client: ClientRecord | None
    error: str | None
    until: float


class CimdResolver:
    """Fetch, check and cache client metadata documents (AS-07..AS-14).

    Failures are cached briefly too, so a flood of authorization requests naming a broken or
    hostile URL costs one fetch per minute, not one per request.
    """

    FAILURE_CACHE_SECONDS = 60.0
    MAX_ENTRIES = 10_000

    def __init__(
        self, fetcher: DocumentFetcher, config: AuthorizationServerConfig, clock: Clock
    ) -> None:
        self._fetcher = fetcher
        self._config = config
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self.fetch_count = 0

    async def resolve(self, client_id: str) -> ClientRecord:
        if not cimd.host_allowed(
            client_id,
            allowed=self._config.cimd_allowed_hosts,
            denied=self._config.cimd_denied_hosts,
        ):
            raise InvalidClient("the client_id host is not allowed by this server's policy")
        now = self._clock.now()
        hit = self._cache.get(client_id)
        if hit is not None and hit.until > now:
            if hit.client is None:
                raise InvalidClient(hit.error or "the client metadata document was refused")
            return hit.client
        try:
            client, lifetime = await self._fetch(client_id, now)
        except InvalidClient as exc:
            self._remember(client_id, _Cached(None, exc.description,
                                              now + self.FAILURE_CACHE_SECONDS))
            raise
        if lifetime > 0:
            self._remember(client_id, _Cached(client, None, now + lifetime))
        return client

    def _remember(self, client_id: str, entry: _Cached) -> None:
        if len(self._cache) >= self.MAX_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[client_id] = entry

    async def _fetch(self, client_id: str, now: float) -> tuple[ClientRecord, int]:
        self.fetch_count += 1
        try:
            status, headers, body = await self._fetcher.get(client_id)
        except Exception as exc:  # the fetcher's refusals; fail closed, say nothing inner
            raise InvalidClient("the client metadata document could not be fetched") from exc
        if status != 200:
            raise InvalidClient(f"the client metadata document answered HTTP {status}")
        doc = cimd.parse_document(client_id, body,
                                  allow_http_loopback=self._config.allow_http_loopback)
        grants = tuple(doc.get("grant_types") or ("authorization_code",))
        scope = doc.get("scope")
        client_uri = doc.get("client_uri")
        record = ClientRecord(
            client_id=client_id,
            client_name=str(doc["client_name"]),
            redirect_uris=tuple(doc["redirect_uris"]),
            token_endpoint_auth_method="none",  # noqa: S106
            grant_types=tuple(g for g in grants if g in ("authorization_code", "refresh_token")),
            response_types=("code",),
            scope=scope if isinstance(scope, str) else None,
            application_type=None,
            source="cimd",
            created_at=now,
            client_uri=client_uri if isinstance(client_uri, str) else None,
        )
        return record, cimd.cache_lifetime(headers)


@dataclass(frozen=True, slots=True)
class ClientAuthentication:
    client: ClientRecord
    method: str  # "none", "client_secret_basic", "client_secret_post" or "private_key_jwt"
    basic_attempted: bool

    @property
    def confidential(self) -> bool:
        return self.method != "none"


class ClientRegistry:
    def __init__(
        self,
        config: AuthorizationServerConfig,
        store: Store,
        clock: Clock,
        cimd_resolver: CimdResolver | None,
        *,
        allow_http_loopback: bool = False,
        jwks_fetcher: DocumentFetcher | None = None,
    ) -> None:
        self._configured = {c.client_id: c for c in config.clients}
        self._jwks_fetcher = jwks_fetcher
        self._jwks_cache: dict[str, tuple[KeySet, float]] = {}
        self._assertions_seen: dict[str, float] = {}
        self._config_records: dict[str, ClientRecord] = {}
        self._store = store
        self._clock = clock
        self._cimd = cimd_resolver if config.cimd_enabled else None
        self._allow_http_loopback = allow_http_loopback

    @property
    def cimd_supported(self) -> bool:
        return self._cimd is not None

    def is_cimd(self, client_id: str) -> bool:
        return cimd.is_cimd_client_id(client_id, allow_http_loopback=self._allow_http_loopback)

    async def get(self, client_id: str) -> ClientRecord:
        """The client, or ``InvalidClient``."""
        if not client_id or len(client_id) > 2048:
            raise InvalidClient("unknown client")
        configured = self._configured.get(client_id)
        if configured is not None:
            record = self._config_records.get(client_id)
            if record is None:
                record = self._config_records[client_id] = _from_config(configured)
            return record
        if self.is_cimd(client_id):
            if self._cimd is None:
                raise InvalidClient("client ID metadata documents are not supported here")
            return await self._cimd.resolve(client_id)
        stored = await self._store.get_client(client_id)
        if stored is None:
            raise InvalidClient("unknown client")
        return stored

    async def authenticate(
        self, form: Mapping[str, str], authorization: str | None,
        audiences: tuple[str, ...] = (),
    ) -> ClientAuthentication:
        """Client authentication at the token, revocation and introspection endpoints."""
        if "client_assertion" in form or "client_assertion_type" in form:
            return await self._authenticate_assertion(form, authorization, audiences)
        basic_id, basic_secret = _parse_basic(authorization)
        basic = basic_id is not None
        post_secret = form.get("client_secret")
        form_id = form.get("client_id")
        if basic and post_secret is not None:
            raise InvalidRequest("use one client authentication method, not two")
        if basic and form_id is not None and form_id != basic_id:
            raise InvalidClient("client_id does not match the authenticated client")
        client_id = basic_id if basic else form_id
        if not client_id:
            raise InvalidClient("client authentication is required")
        try:
            client = await self.get(client_id)
        except InvalidClient:
            # same answer as a wrong secret
            raise InvalidClient("client authentication failed") from None
        if client.secret_hash is None:
            if basic or post_secret is not None:
                raise InvalidClient("client authentication failed")
            if not client.is_public:
                raise InvalidClient("client authentication failed")
            return ClientAuthentication(client, "none", basic)
        secret = basic_secret if basic else post_secret
        method = "client_secret_basic" if basic else "client_secret_post"
        if secret is None or not hmac.compare_digest(hash_secret(secret), client.secret_hash):
            raise InvalidClient("client authentication failed")
        allowed = client.token_endpoint_auth_method
        # basic and post carry the same secret; accept either for a secret-based client.
        # A private_key_jwt client has no secret, so it never gets here.
        if allowed not in ("client_secret_basic", "client_secret_post"):
            raise InvalidClient("client authentication failed")
        return ClientAuthentication(client, method, basic)


    # --- private_key_jwt (RFC 7523 §2.2) ----------------------------------------------------

    async def _authenticate_assertion(
        self, form: Mapping[str, str], authorization: str | None, audiences: tuple[str, ...]
    ) -> ClientAuthentication:
        if authorization is not None or "client_secret" in form:
            raise InvalidRequest("use one client authentication method, not two")
        if form.get("client_assertion_type") != rfc7523.ASSERTION_TYPE:
            raise InvalidClient("unsupported client_assertion_type")
        assertion = form.get("client_assertion", "")
        client_id = form.get("client_id") or unverified_claim(assertion, "sub")
        if not client_id or not audiences:
            raise InvalidClient("client authentication failed")
        try:
            client = await self.get(client_id)
        except InvalidClient:
            raise InvalidClient("client authentication failed") from None
        if client.token_endpoint_auth_method != "private_key_jwt":  # noqa: S105
            raise InvalidClient("this client does not authenticate with private_key_jwt")
        keys = await self._client_keys(client)
        now = self._clock.now()
        jti, exp = rfc7523.verify_client_assertion(assertion, keys, client_id=client_id,
                                                   audiences=audiences, now=now)
        # Single use until it expires (RFC 7523 §3 item 7).
        seen = self._assertions_seen
        for old in [k for k, v in seen.items() if v < now]:
            del seen[old]
        key = f"{client_id}\x00{jti}"
        if key in seen:
            raise InvalidClient("the client assertion was already used")
        if len(seen) >= 100_000:
            raise InvalidClient("too many client assertions in flight; try again shortly")
        seen[key] = exp + rfc7523.LEEWAY
        return ClientAuthentication(client, "private_key_jwt", False)

    async def _client_keys(self, client: ClientRecord) -> KeySet:
        configured = self._configured.get(client.client_id)
        if configured is not None and configured.jwks is not None:
            return _public_keys(configured.jwks)
        if client.jwks_uri is None or self._jwks_fetcher is None:
            raise InvalidClient("the client's keys are not known")
        now = self._clock.now()
        cached = self._jwks_cache.get(client.jwks_uri)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            status, _, body = await self._jwks_fetcher.get(client.jwks_uri)
            if status != 200:
                raise ValueError(f"HTTP {status}")
            keys = _public_keys(jsonlimits.loads(body))
        except Exception as exc:  # any fetch or parse failure: fail closed
            raise InvalidClient("the client's keys cannot be fetched") from exc
        self._jwks_cache[client.jwks_uri] = (keys, now + JWKS_CACHE_SECONDS)
        return keys


JWKS_CACHE_SECONDS = 300.0


def _public_keys(jwks: object) -> KeySet:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise InvalidClient("the client's JWKS has no keys")
    public = [k for k in keys if isinstance(k, dict) and k.get("kty") in ("EC", "RSA", "OKP")
              and "d" not in k]
    try:
        return KeySet.import_key_set({"keys": public})
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidClient("the client's JWKS cannot be read") from exc


def _parse_basic(authorization: str | None) -> tuple[str | None, str | None]:
    if not authorization:
        return None, None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidClient("malformed HTTP Basic credentials") from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed HTTP Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))
