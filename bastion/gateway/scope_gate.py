"""RS-14..RS-16: an operation whose scopes the token lacks gets one 403 step-up challenge
naming every scope the operation needs."""

from __future__ import annotations

from bastion.errors import InsufficientScope
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
from bastion.gateway.responses import send_bearer_error
from bastion.mcp.jsonrpc import Envelope
from bastion.principal import Principal

__all__ = ["ScopeGate"]


class ScopeGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mount: Mount = scope[MOUNT]
        principal: Principal | None = scope.get(PRINCIPAL)
        envelope: Envelope | None = scope.get(ENVELOPE)
        if mount.public or principal is None or envelope is None or envelope.method is None:
            await self.app(scope, receive, send)
            return
        needed = mount.scopes.required(envelope.method, envelope.name)
        missing = mount.scopes.hierarchy.missing(principal.scopes, needed)
        if missing:
            scope[DECISION] = Refusal("step-up", f"scopes missing: {' '.join(missing)}")
            await send_bearer_error(
                send,
                InsufficientScope(f"this operation needs the scope {' '.join(missing)}"),
                resource_metadata=mount.resource_metadata_url,
                scopes=needed,
            )
            return
        await self.app(scope, receive, send)
