"""Builds a running Bastion from a validated configuration: the one place parts are wired."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette

from bastion.audit import AuditEvent, AuditLog, open_audit_log
from bastion.clock import Clock, SystemClock
from bastion.config.model import BastionConfig, MountConfig, SecretRef, TrustedIssuerConfig
from bastion.errors import BastionError, ConfigError, TemporarilyUnavailable
from bastion.gateway.app import Gateway, GatewaySettings
from bastion.gateway.asgi import ASGIApp
from bastion.gateway.mount import Mount, PolicyHolder, ScopeRules
from bastion.gateway.remote_keys import RemoteKeySource
from bastion.gateway.sessions import RedisSessions, SessionStore
from bastion.gateway.upstream import Upstream
from bastion.gateway.upstream_http import HttpUpstream
from bastion.gateway.upstream_stdio import StdioUpstream
from bastion.gateway.verifier import IssuerVerifier, StaticKeySource, TokenVerifier
from bastion.net import FetchPolicy, SafeFetcher
from bastion.oauth.rfc9728 import metadata_url
from bastion.oauth.scopes import ScopeHierarchy
from bastion.policy import Policy, PolicyError, load_policy
from bastion.policy.ratelimit import BucketStore, LocalBuckets, RateLimit, RedisBuckets
from bastion.principal import Principal
from bastion.private_files import private_dir
from bastion.storage.base import StoreError

__all__ = [
    "REVOCATION_MEMORY_SECONDS", "Runtime", "build_runtime", "read_secret", "reload_policies",
]

log = logging.getLogger("bastion")


def read_secret(ref: SecretRef, *, source: str, key: str) -> str:
    """A secret's value from the environment or a file, at start-up; never logged."""
    try:
        return ref.read()
    except LookupError as exc:
        raise ConfigError(source, key, ref.where, str(exc)) from None


class IntrospectionEndpoint:
    """RFC 7662 introspection at an external AS, authenticated with client_secret_basic."""

    def __init__(self, fetcher: SafeFetcher, url: str, client_id: str, secret: str) -> None:
        self.fetcher, self.url = fetcher, url
        raw = f"{client_id}:{secret}".encode()
        self._auth = "Basic " + base64.b64encode(raw).decode()

    async def introspect(self, token: str) -> Mapping[str, Any]:
        result = await self.fetcher.post_form(
            self.url, {"token": token, "token_type_hint": "access_token"},
            headers={"authorization": self._auth, "accept": "application/json"})
        if result.status != 200:
            raise BastionError(f"introspection answered HTTP {result.status}")
        return result.json_object()


REVOCATION_MEMORY_SECONDS = 5.0  # how long a "not revoked" answer is trusted


class RevocationCache:
    """Revocation of built-in access tokens, checked on every request.

    A "not revoked" answer is remembered for a few seconds so the hot path does not query the
    store on every call; a revocation therefore takes effect within ``ttl`` seconds.
    """

    def __init__(self, lookup: Callable[[str], Awaitable[bool]], clock: Clock,
                 ttl: float = REVOCATION_MEMORY_SECONDS, size: int = 50_000) -> None:
        self.lookup, self.clock, self.ttl, self.size = lookup, clock, ttl, size
        self._fresh: dict[str, float] = {}

    async def check(self, principal: Principal) -> bool:
        jti = principal.token_id
        if jti is None:
            return False
        now = self.clock.now()
        until = self._fresh.get(jti)
        if until is not None and now < until:
            return False
        try:
            revoked = await self.lookup(jti)
        except (BastionError, StoreError) as exc:
            # Fail closed (invariant 4): a revocation list that cannot be read lets nothing in.
            raise TemporarilyUnavailable("the revocation list cannot be read") from exc
        if revoked:
            self._fresh.pop(jti, None)
            return True
        if len(self._fresh) >= self.size:
            self._fresh.clear()
        self._fresh[jti] = now + self.ttl
        return False


@dataclass
class Runtime:
    config: BastionConfig
    app: ASGIApp
    gateway: Gateway
    extras: dict[str, Any] = field(default_factory=dict)


def _scope_rules(m: MountConfig, hierarchy: ScopeHierarchy) -> ScopeRules:
    return ScopeRules(base=tuple(m.scopes), tools=dict(m.tool_scopes),
                      resources=dict(m.resource_scopes), prompts=dict(m.prompt_scopes),
                      hierarchy=hierarchy)


def _upstream(config: BastionConfig, m: MountConfig, source: str) -> Upstream:
    up = m.upstream
    key = f"mounts.{m.name}.upstream"
    credentials = {name.lower(): read_secret(ref, source=source, key=f"{key}.headers.{name}")
                   for name, ref in up.headers.items()}
    if up.bearer is not None:
        credentials["authorization"] = "Bearer " + read_secret(up.bearer, source=source,
                                                               key=f"{key}.bearer")
    if up.url is not None:
        return HttpUpstream(up.url, credentials=credentials,
                            connect_timeout=config.server.upstream_connect_timeout_seconds,
                            read_timeout=config.server.request_timeout_seconds)
    assert up.command is not None
    env = dict(up.env_values)
    env.update({name: read_secret(ref, source=source, key=f"{key}.env.{name}")
                for name, ref in up.env.items()})
    return StdioUpstream(m.name, up.command, env=env, cwd=up.cwd,
                         backoff=up.restart_backoff_seconds,
                         backoff_max=up.restart_backoff_max_seconds,
                         timeout=config.server.request_timeout_seconds,
                         isolation=up.isolation, protocol=up.protocol,
                         max_children=up.max_children,
                         max_children_per_principal=up.max_children_per_principal,
                         idle_timeout=up.idle_timeout_seconds,
                         probe_timeout=up.probe_timeout_seconds)


def outbound_tls(config: BastionConfig, source: str) -> ssl.SSLContext | None:
    """The trust store for the SSRF-safe fetcher: the public one, plus ``tls_ca_file``."""
    if config.tls_ca_file is None:
        return None
    context = httpx.create_ssl_context(trust_env=False)
    try:
        context.load_verify_locations(cafile=str(config.tls_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(source, "tls_ca_file", str(config.tls_ca_file),
                          f"a readable PEM file of CA certificates ({exc})") from None
    return context


def _external_verifier(t: TrustedIssuerConfig, source: str,
                       fetcher: SafeFetcher) -> IssuerVerifier:
    introspection = None
    if t.introspection_endpoint is not None:
        if t.introspection_client_id is None or t.introspection_client_secret is None:
            raise ConfigError(source, "trusted_issuers.introspection_client_id",
                              t.introspection_client_id,
                              "a client id and secret to authenticate to introspection")
        secret = read_secret(t.introspection_client_secret, source=source,
                             key="trusted_issuers.introspection_client_secret")
        introspection = IntrospectionEndpoint(fetcher, t.introspection_endpoint,
                                              t.introspection_client_id, secret)
    return IssuerVerifier(
        issuer=t.issuer, algorithms=t.algorithms,
        keys=RemoteKeySource(fetcher, t.issuer, t.jwks_uri),
        introspection=introspection, require_at_jwt_typ=t.require_at_jwt_typ)


async def build_runtime(
    config: BastionConfig, *, source: str = "bastion.toml", clock: Clock | None = None
) -> Runtime:
    clock = clock or SystemClock()
    base = config.server.base_url
    hierarchy = ScopeHierarchy(config.scope_implies)
    tls = outbound_tls(config, source)
    issuers: dict[str, IssuerVerifier] = {}
    other: ASGIApp | None = None
    startup: list[Any] = []
    shutdown: list[Any] = []
    extras: dict[str, Any] = {}
    revocation_check: Callable[[Principal], Awaitable[bool]] | None = None

    audit: AuditLog | None = None
    if config.audit.enabled:
        a = config.audit
        private_dir(config.data_dir)
        audit = await open_audit_log(
            config.data_dir, storage_url=config.storage_url, writer=a.writer, mode=a.mode,
            jsonl=a.jsonl, checkpoint_every=a.checkpoint_every,
            checkpoint_seconds=a.checkpoint_seconds, write_timeout=a.write_timeout_seconds)
        extras["audit"] = audit

    if config.authorization_server.enabled:
        from bastion.keys import SigningKeys
        from bastion.server.app import build_authorization_server_routes
        from bastion.server.cimd_fetch import SafeDocumentFetcher, cimd_fetch_policy
        from bastion.storage import open_store

        private_dir(config.data_dir)
        keys = SigningKeys.load_or_create(config.data_dir,
                                          algorithm=config.authorization_server.signing_algorithm)

        def load_keys() -> Any:
            keys.reload()
            return keys.public_key_set()

        store = await open_store(config.storage_url, config.data_dir)
        cimd_http = SafeFetcher(cimd_fetch_policy(
            allow_http_loopback=config.authorization_server.allow_http_loopback),
            ssl_context=tls)
        cimd = SafeDocumentFetcher(cimd_http)
        routes = build_authorization_server_routes(config, store, keys, clock, cimd, audit)
        other = Starlette(routes=routes)
        issuers[config.issuer] = IssuerVerifier(
            issuer=config.issuer, algorithms=keys.algorithms,
            keys=StaticKeySource(load_keys), require_at_jwt_typ=True)
        revoked = RevocationCache(store.is_access_token_revoked, clock)
        revocation_check = revoked.check
        from bastion.server.purge import ExpiredStatePurge

        purge = ExpiredStatePurge(store, clock,
                                  config.authorization_server.purge_interval_seconds)
        startup.append(purge.start)
        shutdown.extend([purge.stop, store.close, cimd_http.aclose])  # purge stops first
        extras.update(store=store, keys=keys, purge=purge)
    for t in config.trusted_issuers:
        fetcher = SafeFetcher(FetchPolicy(allow_http_loopback=t.allow_http_loopback),
                              ssl_context=tls)
        shutdown.append(fetcher.aclose)  # its pooled connections go with the gateway
        issuers[t.issuer] = _external_verifier(t, source, fetcher)

    verifier = TokenVerifier(issuers, clock, is_revoked=revocation_check)
    mounts: list[Mount] = []
    upstreams: dict[str, Upstream] = {}
    policies: dict[str, tuple[MountConfig, PolicyHolder]] = {}
    for m in config.mounts:
        resource = config.resource_for(m)
        mount_issuers = tuple(config.issuer if i == "builtin" else i for i in m.issuers)
        holder = None
        if m.policy is not None:
            holder = PolicyHolder(_load_policy(m, hierarchy, source))
            policies[m.name] = (m, holder)
        limits = tuple(RateLimit(r.key, r.per_minute, r.burst) for r in m.rate_limits)
        mounts.append(Mount(name=m.name, path=m.path, resource=resource,
                            resource_metadata_url=metadata_url(resource), public=m.public,
                            issuers=mount_issuers, scopes=_scope_rules(m, hierarchy),
                            policy=holder, rate_limits=limits,
                            audit_keep_arguments=m.audit_keep_arguments))
        upstreams[m.name] = _upstream(config, m, source)

    settings = GatewaySettings(
        allowed_origins=(base, *config.server.allowed_origins),
        check_host=config.server.is_loopback,
        allowed_hosts=config.server.allowed_hosts,
        max_body_bytes=config.server.max_body_bytes,
        request_timeout=config.server.request_timeout_seconds,
    )
    buckets: BucketStore = LocalBuckets()
    sessions: SessionStore | None = None
    if config.redis_url is not None:
        # Shared short-lived state, so that no replica holds what another needs.
        import redis.asyncio

        client = redis.asyncio.from_url(config.redis_url)
        buckets = RedisBuckets(client)
        sessions = RedisSessions(client)
        shutdown.append(client.aclose)
    if audit is not None:
        for name, upstream in upstreams.items():
            if isinstance(upstream, StdioUpstream):
                upstream.on_spawn = _spawn_recorder(audit, name)
        shutdown.append(audit.close)  # last: after everything that records has stopped
    gateway = Gateway(settings=settings, mounts=mounts, verifier=verifier, upstreams=upstreams,
                      other=other, buckets=buckets, sessions=sessions, audit=audit,
                      on_startup=startup, on_shutdown=shutdown)
    extras["policies"] = policies
    extras["hierarchy"] = hierarchy
    return Runtime(config=config, app=gateway, gateway=gateway, extras=extras)


def _spawn_recorder(audit: AuditLog, mount: str) -> Callable[[tuple[str, ...]],
                                                              Awaitable[None]]:
    """BP-18: every stdio spawn is recorded with its exact command."""

    async def record(command: tuple[str, ...]) -> None:
        await audit.append(AuditEvent("gateway.stdio_spawn", mount=mount,
                                      extra={"command": list(command)}))

    return record


def _load_policy(m: MountConfig, hierarchy: ScopeHierarchy, source: str) -> Policy:
    assert m.policy is not None
    try:
        return load_policy(m.policy, hierarchy)
    except PolicyError as exc:
        raise ConfigError(source, f"mounts.{m.name}.policy", str(m.policy), str(exc)) from None


RELOAD_ERROR_CHARS = 500  # how much of a refused policy's error its audit record keeps


def reload_policies(runtime: Runtime, *, trigger: str = "SIGHUP") -> list[str]:
    """Re-read every mount's policy. Each is swapped in only if it loads whole; a bad one is
    reported and the previous one stays in force. Returns the errors.

    Recorded: a ``policy.reloaded`` per policy swapped in, then one ``config.reloaded`` for the
    reload as a whole, naming what it re-read (the mount policies: the configuration file is
    read at start only), which policies were swapped in and which were refused and why."""
    errors: list[str] = []
    events: list[AuditEvent] = []
    reloaded: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for name, (m, holder) in runtime.extras.get("policies", {}).items():
        try:
            policy = load_policy(m.policy, runtime.extras["hierarchy"])
        except PolicyError as exc:
            errors.append(str(exc))
            refused.append({"mount": name, "file": str(m.policy),
                            "error": str(exc)[:RELOAD_ERROR_CHARS]})
            log.error("policy of mount %s not reloaded, previous one stays: %s", name, exc)
            continue
        holder.current = policy
        log.info("policy of mount %s reloaded (%d rules)", name, len(policy.rules))
        reloaded.append({"mount": name, "file": str(m.policy), "rules": len(policy.rules)})
        events.append(AuditEvent("policy.reloaded", mount=name,
                                 extra={"rules": len(policy.rules), "file": str(m.policy)}))
    events.append(AuditEvent(
        "config.reloaded", reason=trigger,
        extra={"reread": "mount policies", "reloaded": reloaded, "refused": refused}))
    audit = runtime.extras.get("audit")
    if audit is not None:
        _record_soon(audit, events)
    return errors


def _record_soon(audit: AuditLog, events: list[AuditEvent]) -> None:
    """From synchronous code (a signal handler): append, in order, when the loop next runs."""
    async def append() -> None:
        for event in events:
            try:
                await audit.append(event)
            except Exception:
                log.exception("could not record %s", event.kind)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop (a test calling outside one): nothing to record into
    task = loop.create_task(append())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task[None]] = set()
