"""Issue 5: the mount's policy decides each operation (allow, deny, step-up)."""

from __future__ import annotations

import time

from bastion.errors import InsufficientScope, JsonRpcError
from bastion.gateway.asgi import (
    DECISION,
    ENVELOPE,
    ERA,
    MOUNT,
    PRINCIPAL,
    ASGIApp,
    Receive,
    Scope,
    Send,
)
from bastion.gateway.mount import Mount
from bastion.gateway.responses import send_bearer_error, send_jsonrpc_error
from bastion.mcp.jsonrpc import Envelope
from bastion.policy import Decision, Facts
from bastion.principal import Principal

__all__ = ["PolicyGate", "facts_for"]


def facts_for(scope: Scope, mount: Mount, principal: Principal, method: str,
              name: str | None, arguments: dict[str, object]) -> Facts:
    client = scope.get("client")
    era = scope.get(ERA)
    return Facts(principal=principal, mount=mount.name, method=method, name=name,
                 arguments=arguments, client_address=client[0] if client else "",
                 era=era.value if era is not None else "", time=time.time(),
                 claims=principal.claims)


class PolicyGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mount: Mount = scope[MOUNT]
        principal: Principal | None = scope.get(PRINCIPAL)
        envelope: Envelope | None = scope.get(ENVELOPE)
        if (mount.policy is None or principal is None or envelope is None
                or envelope.method is None):
            await self.app(scope, receive, send)
            return
        facts = facts_for(scope, mount, principal, envelope.method, envelope.name,
                          envelope.arguments)
        decision: Decision = mount.policy.current.decide(facts)
        scope[DECISION] = decision
        if decision.effect == "deny":
            # The client sees the rule's message, never the rule itself.
            # A notification has no id to carry the error: the refusal shows in the status.
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.POLICY_DENIED, decision.message, request_id=envelope.id,
                http_status=403 if envelope.kind == "notification" else 200))
            return
        if decision.effect == "step_up":
            needed = tuple(sorted(set(decision.scopes) | set(mount.scopes.required(
                envelope.method, envelope.name))))
            await send_bearer_error(send, InsufficientScope(decision.message),
                                    resource_metadata=mount.resource_metadata_url,
                                    scopes=needed)
            return
        await self.app(scope, receive, send)
