"""Issue 5 item 7: rate limits per principal, client and tool, answered with 429.

Fail closed: when the shared bucket store (Redis) cannot be reached, the request is refused
with 503 rather than let through unmetered.
"""

from __future__ import annotations

import hashlib
import logging
import math

from bastion.errors import JsonRpcError
from bastion.gateway.asgi import (
    DECISION,
    ENVELOPE,
    MOUNT,
    PRINCIPAL,
    ASGIApp,
    Receive,
    Refusal,
    Scope,
    Send,
)
from bastion.gateway.mount import Mount
from bastion.gateway.responses import send_response
from bastion.mcp.jsonrpc import Envelope, error_body
from bastion.policy.ratelimit import BucketStore, RateLimit
from bastion.principal import Principal

__all__ = ["RateLimiter", "bucket_name"]

log = logging.getLogger("bastion.gateway")
RATE_LIMITED = -32029


def bucket_name(limit: RateLimit, mount: str, principal: Principal, tool: str | None) -> str:
    parts = {"principal": [principal.issuer, principal.subject],
             "client": [principal.issuer, principal.client_id],
             "tool": [tool or ""],
             "principal+tool": [principal.issuer, principal.subject, tool or ""]}[limit.key]
    digest = hashlib.sha256("\x00".join([mount, limit.key, *parts]).encode()).hexdigest()
    return f"{mount}:{limit.key}:{digest[:32]}"


class RateLimiter:
    def __init__(self, app: ASGIApp, *, buckets: BucketStore) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mount: Mount = scope[MOUNT]
        principal: Principal | None = scope.get(PRINCIPAL)
        envelope: Envelope | None = scope.get(ENVELOPE)
        if (not mount.rate_limits or principal is None or envelope is None
                or envelope.method is None):
            await self.app(scope, receive, send)
            return
        tool = envelope.name if envelope.method == "tools/call" else None
        for limit in mount.rate_limits:
            if limit.key in ("tool", "principal+tool") and tool is None:
                continue
            try:
                allowed, retry = await self.buckets.take(
                    bucket_name(limit, mount.name, principal, tool), limit)
            except Exception:  # any failure of the shared store: fail closed
                log.exception("rate-limit store unavailable for mount %s", mount.name)
                body = error_body(JsonRpcError.INTERNAL_ERROR,
                                  "Rate limiting is unavailable; try again later", envelope.id)
                await send_response(send, 503, body, [(b"content-type", b"application/json"),
                                                      (b"retry-after", b"1")])
                return
            if not allowed:
                scope[DECISION] = Refusal("deny", f"rate limit ({limit.key}) exceeded")
                body = error_body(RATE_LIMITED, "Rate limit exceeded", envelope.id,
                                  {"limit": limit.key, "retry_after": round(retry, 3)})
                await send_response(send, 429, body, [
                    (b"content-type", b"application/json"),
                    (b"retry-after", str(max(1, math.ceil(retry))).encode())])
                return
        await self.app(scope, receive, send)
