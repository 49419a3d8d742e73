"""Assembles the gateway: one visible middleware stack per mount, a router, and lifespan."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.audit import AuditLog
from bastion.gateway.asgi import MOUNT, ASGIApp, Receive, Scope, Send
from bastion.gateway.audit_trail import AuditAllowed, AuditRefusals
from bastion.gateway.bearer_auth import BearerAuth
from bastion.gateway.envelope import McpEnvelope
from bastion.gateway.mount import Mount
from bastion.gateway.policy_gate import PolicyGate
from bastion.gateway.proxy import Proxy
from bastion.gateway.rate_limit import RateLimiter
from bastion.gateway.responses import send_response
from bastion.gateway.scope_gate import ScopeGate
from bastion.gateway.sessions import SessionRegistry, SessionStore
from bastion.gateway.transport_guard import TransportGuard
from bastion.gateway.upstream import Upstream
from bastion.gateway.verifier import TokenVerifier
from bastion.oauth.rfc9728 import WELL_KNOWN, metadata_document
from bastion.policy.ratelimit import BucketStore, LocalBuckets

__all__ = ["Gateway", "GatewaySettings", "build_mount_stack"]

log = logging.getLogger("bastion.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    allowed_origins: tuple[str, ...]
    check_host: bool
    allowed_hosts: tuple[str, ...]
    max_body_bytes: int
    # The most one call may take, from the request to the end of its answer (GET event
    # streams excepted): an upstream that drips its answer is cut off here.
    request_timeout: float = 120.0


def build_mount_stack(
    settings: GatewaySettings, verifier: TokenVerifier, proxy: ASGIApp,
    buckets: BucketStore | None = None, audit: AuditLog | None = None,
) -> ASGIApp:
    """The request path of every mount, outermost first."""
    layers: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = [
        (TransportGuard, {"allowed_origins": settings.allowed_origins,
                          "check_host": settings.check_host,
                          "allowed_hosts": settings.allowed_hosts}),
        *([(AuditRefusals, {"audit": audit})] if audit else []),
        (BearerAuth, {"verifier": verifier}),
        (McpEnvelope, {"max_body_bytes": settings.max_body_bytes}),
        (ScopeGate, {}),
        (PolicyGate, {}),
        (RateLimiter, {"buckets": buckets or LocalBuckets()}),
        *([(AuditAllowed, {"audit": audit})] if audit else []),
    ]
    app = proxy
    for factory, options in reversed(layers):
        app = factory(app, **options)
    return app


Hook = Callable[[], Awaitable[None]]


class Gateway:
    """Routes MCP mounts and their protected-resource metadata; everything else to ``other``."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        mounts: Sequence[Mount],
        verifier: TokenVerifier,
        upstreams: Mapping[str, Upstream],
        other: ASGIApp | None = None,
        buckets: BucketStore | None = None,
        sessions: SessionStore | None = None,
        audit: AuditLog | None = None,
        on_startup: Sequence[Hook] = (),
        on_shutdown: Sequence[Hook] = (),
    ) -> None:
        self.settings = settings
        self.sessions = sessions or SessionRegistry()
        self.upstreams = upstreams
        self.proxy = Proxy(upstreams, self.sessions, audit=audit,
                           request_timeout=settings.request_timeout)
        self.stack = build_mount_stack(settings, verifier, self.proxy, buckets, audit)
        # Outside the MCP mounts (metadata, the authorization server's endpoints and pages)
        # only Host is checked: metadata and the token endpoint serve browser-based clients of
        # any origin, and the login and consent forms carry their own CSRF defences.
        self.guard = TransportGuard(self._route_other, allowed_origins=(),
                                    check_host=settings.check_host,
                                    allowed_hosts=settings.allowed_hosts, check_origin=False)
        self.other = other
        self.by_path = {m.path: m for m in mounts}
        self.prm: dict[str, bytes] = {}
        for m in mounts:
            if m.public:
                continue
            doc = metadata_document(resource=m.resource,
                                    authorization_servers=m.issuers,
                                    scopes_supported=sorted(set(m.scopes.all_scopes()) | (
                                        m.policy.current.scopes() if m.policy else set())),
                                    resource_name=None)
            self.prm[WELL_KNOWN + m.path] = json.dumps(doc).encode()
        protected = [m for m in mounts if not m.public]
        if len(protected) == 1:
            self.prm[WELL_KNOWN] = self.prm[WELL_KNOWN + protected[0].path]
        self.on_startup = list(on_startup)
        self.on_shutdown = list(on_shutdown)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        mount = self.by_path.get(path) or self.by_path.get(path.rstrip("/"))
        if mount is not None:
            scope[MOUNT] = mount
            await self.stack(scope, receive, send)
            return
        await self.guard(scope, receive, send)

    async def _route_other(self, scope: Scope, receive: Receive, send: Send) -> None:
        doc = self.prm.get(scope["path"])
        if doc is not None and scope["method"] in ("GET", "HEAD"):
            await send_response(send, 200, doc, [(b"content-type", b"application/json"),
                                                 (b"cache-control", b"public, max-age=300"),
                                                 (b"access-control-allow-origin", b"*")])
            return
        if scope["path"] == "/health":
            await send_response(send, 200, b'{"status":"ok"}',
                                [(b"content-type", b"application/json")])
            return
        if self.other is not None:
            await self.other(scope, receive, send)
            return
        await send_response(send, 404, b'{"error":"not_found"}',
                            [(b"content-type", b"application/json")])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self.on_startup:
                        await hook()
                    for up in self.upstreams.values():
                        await up.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for up in self.upstreams.values():
                    with contextlib.suppress(Exception):
                        await up.aclose()
                for hook in self.on_shutdown:
                    with contextlib.suppress(Exception):
                        await hook()
                await send({"type": "lifespan.shutdown.complete"})
                return
