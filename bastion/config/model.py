"""The configuration schema. Secure defaults are written here, as data."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.errors import OAuthError
from bastion.oauth.rfc7591 import check_text
from bastion.oauth.rfc8707 import canonical_resource
from bastion.oauth.scopes import parse_scopes

__all__ = [
    "AuditConfig",
    "AuthorizationServerConfig",
    "BastionConfig",
    "ClientConfig",
    "MountConfig",
    "RateLimitConfig",
    "SecretRef",
    "ServerConfig",
    "TrustedIssuerConfig",
    "UpstreamConfig",
]

_SCOPE = r"^[\x21\x23-\x5B\x5D-\x7E]+$"
Scope = Annotated[str, Field(pattern=_SCOPE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """A secret named by where it lives, never written in the file itself."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    @property
    def where(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def read(self) -> str:
        """The secret's value; ``LookupError`` (saying what is missing) if it cannot be had."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise LookupError("an environment variable that is set and not empty")
            return value
        assert self.file is not None
        try:
            value = self.file.read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise LookupError(f"a readable UTF-8 file ({exc})") from exc
        if not value:
            raise LookupError("a file that is not empty")
        return value


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The URL clients use to reach this gateway; resource identifiers derive from it.
    public_url: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    request_timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    upstream_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # The server stack: "auto" takes uvloop and httptools (installed with Bastion; C speedups
    # for the event loop and the HTTP/1.1 parser) and falls back to asyncio and h11 when they
    # cannot be imported; naming one makes its absence a start-up error.
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    http_parser: Literal["auto", "httptools", "h11"] = "auto"

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = urlsplit(v)
        if p.scheme not in ("http", "https") or not p.hostname or p.query or p.fragment:
            raise ValueError("an http(s) URL with a host and no query or fragment")
        return v.rstrip("/")

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class UpstreamConfig(_Strict):
    """Where the MCP server behind a mount is: a Streamable HTTP URL or a stdio command."""

    url: str | None = None
    command: tuple[str, ...] | None = None
    cwd: Path | None = None
    # Environment of a stdio child: only these variables (names -> where their value comes from)
    env: dict[str, SecretRef] = Field(default_factory=dict)
    # Fixed, non-secret environment values for a stdio child.
    env_values: dict[str, str] = Field(default_factory=dict)
    # Headers the gateway sends upstream (its own credentials), values from env or file.
    headers: dict[str, SecretRef] = Field(default_factory=dict)
    bearer: SecretRef | None = None
    # The era the server speaks: "auto" probes a stdio server with server/discover first.
    protocol: Literal["auto", "2025-11-25", "2026-07-28"] = "auto"
    restart_backoff_seconds: float = Field(default=0.5, gt=0, le=60)
    restart_backoff_max_seconds: float = Field(default=30.0, gt=0, le=3600)
    # stdio only. 2026-07-28 callers each get a server process of their own ("principal",
    # the default: a server that keeps state never mixes two users'), or all share one
    # ("shared": for servers known to keep no state). Legacy sessions always get their own.
    isolation: Literal["principal", "shared"] = "principal"
    # stdio only: server processes per principal and per mount; a caller at a cap is refused
    # (429 / 503), never served by evicting someone else's process.
    max_children_per_principal: int = Field(default=8, ge=1, le=10_000)
    max_children: int = Field(default=64, ge=1, le=100_000)
    # stdio only: a process with no request and no open stream for this long is closed.
    idle_timeout_seconds: float = Field(default=600.0, gt=0, le=7 * 86400)
    # stdio only: how long the server/discover probe waits before taking the server for legacy.
    probe_timeout_seconds: float = Field(default=5.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_kind(self) -> UpstreamConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError("give exactly one of url (Streamable HTTP) or command (stdio)")
        if self.url is not None:
            p = urlsplit(self.url)
            if p.scheme not in ("http", "https") or not p.hostname:
                raise ValueError("url must be an http(s) URL with a host")
        if self.command is not None and (not self.command or not self.command[0]):
            raise ValueError("command must name a program")
        stdio_only = sorted(self.model_fields_set & _STDIO_ONLY)
        if self.url is not None and stdio_only:
            raise ValueError(f"no stdio-only setting for a url upstream ({', '.join(stdio_only)})")
        if self.max_children_per_principal > self.max_children:
            raise ValueError("max_children_per_principal cannot exceed max_children")
        for name in self.headers:
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name} cannot be set for the upstream")
        return self


_STDIO_ONLY = frozenset({"isolation", "max_children_per_principal", "max_children",
                         "idle_timeout_seconds", "probe_timeout_seconds"})


class RateLimitConfig(_Strict):
    """A token bucket: ``per_minute`` refill, ``burst`` capacity, one bucket per ``key``."""

    key: Literal["principal", "client", "tool", "principal+tool"] = "principal"
    per_minute: float = Field(gt=0, le=1_000_000)
    burst: int = Field(default=10, ge=1, le=1_000_000)


class MountConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    path: str = Field(pattern=r"^(/[A-Za-z0-9._~-]+)+$")
    upstream: UpstreamConfig
    # An open mount (no token needed) must be declared as such.
    public: bool = False
    resource_name: str | None = None
    # Scopes every request on this mount needs; also the scope of the 401 challenge.
    scopes: tuple[Scope, ...] = ()
    # Extra scopes per tool / resource URI / prompt name; "*" applies to all others.
    tool_scopes: dict[str, tuple[Scope, ...]] = Field(default_factory=dict)
    resource_scopes: dict[str, tuple[Scope, ...]] = Field(default_factory=dict)
    prompt_scopes: dict[str, tuple[Scope, ...]] = Field(default_factory=dict)
    # Issuers trusted for this mount: "builtin" and/or issuer URLs of [[trusted_issuers]].
    issuers: tuple[str, ...] = ("builtin",)
    # A policy file (TOML, conditions in CEL); with one, what no rule allows is denied.
    policy: Path | None = None
    rate_limits: tuple[RateLimitConfig, ...] = ()
    # Tool-argument fields the audit trail keeps in the clear (dotted paths); the rest of the
    # arguments is recorded only as a digest.
    audit_keep_arguments: tuple[str, ...] = ()

    @field_validator("path")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v.startswith("/.well-known") or v.split("/")[1] in _RESERVED_PATHS:
            raise ValueError(f"a path not under a reserved prefix ({', '.join(_RESERVED_PATHS)})")
        return v


_RESERVED_PATHS = ("authorize", "token", "register", "jwks.json", "revoke", "introspect",
                   "login", "consent", "logout", ".well-known", "health")


class TrustedIssuerConfig(_Strict):
    """An external authorization server, trusted by issuer URL."""

    issuer: str
    jwks_uri: str | None = None
    introspection_endpoint: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: SecretRef | None = None
    algorithms: tuple[str, ...] = ("ES256", "RS256", "PS256", "EdDSA")
    require_at_jwt_typ: bool = False
    allow_http_loopback: bool = False

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from bastion.oauth.rfc9068 import ASYMMETRIC_ALGORITHMS

        bad = [a for a in v if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not v:
            raise ValueError(f"asymmetric JWS algorithms from {', '.join(ASYMMETRIC_ALGORITHMS)}")
        return v


def _as_value_error(check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    try:
        check(*args, **kwargs)
    except OAuthError as exc:
        raise ValueError(exc.description) from None


class ClientConfig(_Strict):
    """A pre-registered client of the built-in authorization server."""

    client_id: str = Field(min_length=1, max_length=255)
    client_name: str | None = None
    redirect_uris: tuple[str, ...] = ()
    secret: SecretRef | None = None
    token_endpoint_auth_method: Literal[
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt"
    ] = "none"  # noqa: S105 - a method name, not a secret
    jwks_uri: str | None = None
    # The client's public keys inline (private_key_jwt), instead of jwks_uri.
    jwks: dict[str, Any] | None = None
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    # The most a client may be given; for a client_credentials client, which no user
    # consents for, its only ceiling.
    scope: str | None = None

    @field_validator("client_name")
    @classmethod
    def _printable_name(cls, v: str | None) -> str | None:
        if v is not None:
            _as_value_error(check_text, "client_name", v)
        return v

    @field_validator("redirect_uris")
    @classmethod
    def _printable_redirect_uris(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for uri in v:
            _as_value_error(check_text, "a redirect URI", uri)
        return v

    @field_validator("scope")
    @classmethod
    def _scope_syntax(cls, v: str | None) -> str | None:
        parse_scopes(v)  # its ValueError names the bad scope
        return v

    @model_validator(mode="after")
    def _keys_for_private_key_jwt(self) -> ClientConfig:
        if self.token_endpoint_auth_method == "private_key_jwt" and not (  # noqa: S105
                self.jwks_uri or self.jwks):
            raise ValueError("private_key_jwt needs the client's keys: jwks_uri or jwks")
        if self.token_endpoint_auth_method.startswith("client_secret") and self.secret is None:
            raise ValueError(f"{self.token_endpoint_auth_method} needs a secret")
        return self


class AuthorizationServerConfig(_Strict):
    enabled: bool = True
    # Defaults to the gateway's base URL.
    issuer: str | None = None
    access_token_lifetime_seconds: int = Field(default=900, ge=30, le=3600)
    refresh_token_lifetime_seconds: int = Field(default=30 * 86400, ge=60, le=365 * 86400)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=120)
    authorization_code_lifetime_seconds: int = Field(default=60, ge=10, le=600)
    signing_algorithm: Literal["ES256", "RS256", "EdDSA"] = "ES256"
    scopes: tuple[Scope, ...] = ()
    clients: tuple[ClientConfig, ...] = ()
    # Client ID Metadata Documents (CIMD)
    cimd_enabled: bool = True
    cimd_allowed_hosts: tuple[str, ...] = ()
    cimd_denied_hosts: tuple[str, ...] = ()
    # Dynamic client registration (RFC 7591; deprecated by MCP 2026-07-28, kept for older peers)
    dcr_enabled: bool = True
    dcr_initial_access_token: SecretRef | None = None
    dcr_allow_custom_schemes: bool = False
    dcr_rate_limit_per_minute: int = Field(default=20, ge=1, le=10_000)
    dcr_unused_expiry_seconds: int = Field(default=86400, ge=60)
    # Development only: let clients use plain-http loopback URLs (CIMD documents, JWKS).
    allow_http_loopback: bool = False
    # How often expired codes, pending requests, sessions and token rows are deleted (also
    # once at start-up). Nothing expired is ever used meanwhile; this only bounds the data.
    purge_interval_seconds: int = Field(default=600, ge=10, le=86400)


class AuditConfig(_Strict):
    """The signed, hash-chained audit trail (``bastion audit verify`` checks it offline)."""

    enabled: bool = True
    # fail-closed: a request whose record cannot be written is refused. best-effort: logged.
    mode: Literal["fail-closed", "best-effort"] = "fail-closed"
    # This replica's chain; default: the host name.
    writer: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # An extra append-only JSONL copy (e.g. for a SIEM shipper).
    jsonl: Path | None = None
    checkpoint_every: int = Field(default=1000, ge=1, le=1_000_000)
    checkpoint_seconds: float = Field(default=60.0, gt=0, le=86_400)
    # How long a record may wait for a store held by someone else (a locked audit.db, a
    # PostgreSQL lock) before the request it belongs to is refused (fail-closed: 503).
    write_timeout_seconds: float = Field(default=2.0, gt=0, le=60)


_DURATION = re.compile(r"^\d+[smhd]$")


class BastionConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    data_dir: Path = Path("bastion-data")
    storage_url: str | None = None
    # Extra CA certificates (PEM) trusted for outbound fetches (client metadata documents,
    # external JWKS and metadata), besides the public trust store: for private CAs.
    tls_ca_file: Path | None = None
    # Shared short-lived state for several replicas (rate-limit buckets), e.g.
    # "redis://127.0.0.1:6379/0". Unset: in-process.
    redis_url: str | None = None
    authorization_server: AuthorizationServerConfig = Field(
        default_factory=AuthorizationServerConfig
    )
    trusted_issuers: tuple[TrustedIssuerConfig, ...] = ()
    audit: AuditConfig = Field(default_factory=AuditConfig)
    scope_implies: dict[str, tuple[Scope, ...]] = Field(default_factory=dict)
    mounts: tuple[MountConfig, ...] = ()

    @model_validator(mode="after")
    def _coherent(self) -> BastionConfig:
        seen_paths: set[str] = set()
        seen_names: set[str] = set()
        known = {t.issuer for t in self.trusted_issuers}
        for i, m in enumerate(self.mounts):
            if m.path in seen_paths or m.name in seen_names:
                raise ValueError(f"mounts[{i}]: name and path must be unique ({m.name}, {m.path})")
            seen_paths.add(m.path)
            seen_names.add(m.name)
            for iss in () if m.public else m.issuers:
                if iss == "builtin" and not self.authorization_server.enabled:
                    raise ValueError(
                        f"mounts[{i}].issuers names builtin but authorization_server is disabled"
                    )
                if iss != "builtin" and iss not in known:
                    raise ValueError(f"mounts[{i}].issuers names {iss!r}, not in trusted_issuers")
        return self

    @property
    def issuer(self) -> str:
        return self.authorization_server.issuer or self.server.base_url

    def resource_for(self, mount: MountConfig) -> str:
        return canonical_resource(self.server.base_url + mount.path)
