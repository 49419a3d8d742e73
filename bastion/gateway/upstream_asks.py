"""What an upstream asks of the client (sampling, elicitation, roots, ...) is decided and
recorded like a call (BP-18's "extra authorization", the security best practices' human in the
loop): the mount's policy names the request's method, a ``deny`` rule forbids it, and every
request, relayed or not, leaves a ``gateway.decision`` record (``extra.asked_by = "upstream"``).

- 2025-11-25: a server request on an SSE stream. Refused, it is not relayed; the upstream gets a
  JSON-RPC error in the client's place, so it does not wait for an answer that will not come.
- 2026-07-28: servers send no requests; they answer with an ``InputRequiredResult`` whose
  ``inputRequests`` the client fulfils. If policy refuses any of them, the client gets a
  JSON-RPC error instead of the result. A request on a 2026-07-28 stream is refused outright.

Fail closed: a relayed request's record is written before it is relayed; if it cannot be, the
request is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.audit import Actor, AuditEvent, AuditLog, AuditUnavailable
from bastion.audit import Principal as AuditPrincipal
from bastion.errors import JsonRpcError
from bastion.gateway.asgi import CORRELATION, Scope
from bastion.gateway.mount import Mount
from bastion.gateway.policy_gate import facts_for
from bastion.mcp.eras import Era
from bastion.mcp.jsonrpc import Envelope, error_body
from bastion.mcp.methods import SERVER_REQUESTS
from bastion.mcp.server_messages import InputRequest
from bastion.principal import Principal

__all__ = ["INPUT_REQUEST_METHODS", "UpstreamAsks", "Verdict"]

log = logging.getLogger("bastion.gateway")

# schema/2026-07-28 InputRequest: what an InputRequiredResult may ask for
INPUT_REQUEST_METHODS = frozenset({"elicitation/create", "sampling/createMessage", "roots/list"})

Reply = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str
    rule: str | None = None


class UpstreamAsks:
    """Decides, for one client exchange, what its upstream asks of the client."""

    def __init__(self, scope: Scope, mount: Mount, principal: Principal | None, era: Era,
                 envelope: Envelope | None, audit: AuditLog | None,
                 reply: Reply | None) -> None:
        self.scope, self.mount, self.principal, self.era = scope, mount, principal, era
        self.envelope, self.audit, self.reply = envelope, audit, reply

    def _policy(self, method: str, params: Mapping[str, Any]) -> Verdict:
        holder = self.mount.policy
        if holder is None or self.principal is None:
            return Verdict(True, "no policy on this mount")
        decision = holder.current.decide(facts_for(self.scope, self.mount, self.principal,
                                                   method, None, dict(params)))
        if decision.effect == "allow":
            return Verdict(True, decision.reason, decision.rule)
        if decision.effect == "deny":
            return Verdict(False, decision.message, decision.rule)
        # require_scopes: no challenge can reach the client in the middle of an answer
        return Verdict(False, "the caller's token lacks the scopes the policy requires for "
                       f"{method}", decision.rule)

    async def stream_request(self, message: Mapping[str, Any]) -> bool:
        """A request the upstream put on a stream: may it go to the client?"""
        method = str(message.get("method"))
        params = message.get("params")
        if self.era is Era.MODERN:
            verdict = Verdict(False, "2026-07-28 servers send no requests")
        elif method not in SERVER_REQUESTS:
            verdict = Verdict(False, f"{method[:100]!r} is not a request a server may send")
        else:
            verdict = self._policy(method, params if isinstance(params, dict) else {})
        allowed = await self._record(method, verdict)
        if not allowed and self.reply is not None and self.era is Era.LEGACY:
            request_id = message.get("id")
            await self.reply(error_body(
                JsonRpcError.POLICY_DENIED, f"Refused by the gateway: {verdict.reason}",
                request_id))
        return allowed

    async def input_requests(self, requests: list[InputRequest]) -> str | None:
        """An InputRequiredResult's requests: None when every one may reach the client, else
        what the client is told instead."""
        refused: str | None = None
        for request in requests:
            if request.method not in INPUT_REQUEST_METHODS:
                verdict = Verdict(False, f"{request.method[:100]!r} is not an input request")
            else:
                verdict = self._policy(request.method, request.params)
            if not await self._record(request.method, verdict, key=request.key):
                refused = refused or (f"The upstream MCP server asked for {request.method}, "
                                      "which this mount does not allow")
        return refused

    async def _record(self, method: str, verdict: Verdict, key: str | None = None) -> bool:
        """Record the decision; a relayed request whose record cannot be written is refused."""
        principal = self.principal
        extra: dict[str, Any] = {"asked_by": "upstream",
                                 "during": self.envelope.method if self.envelope and
                                 self.envelope.method else self.scope["method"]}
        if key is not None:
            extra["input_request"] = key[:200]
        if not verdict.allowed:
            log.info("mount %s: the upstream asked for %s; refused: %s", self.mount.name,
                     method[:100], verdict.reason)
        if self.audit is None:
            return verdict.allowed
        event = AuditEvent(
            "gateway.decision",
            correlation_id=self.scope.get(CORRELATION),
            principal=AuditPrincipal(principal.issuer, principal.subject) if principal else None,
            client_id=principal.client_id if principal else None,
            act=tuple(Actor(str(a.get("sub", "")), a.get("iss"), a.get("client_id"))
                      for a in principal.act) if principal else (),
            mount=self.mount.name, method=method[:200],
            decision="allow" if verdict.allowed else "deny", rule=verdict.rule,
            reason=verdict.reason, extra=extra)
        try:
            await self.audit.append(event)
        except AuditUnavailable:
            log.error("mount %s: the upstream's %s could not be recorded; refused",
                      self.mount.name, method[:100])
            return False
        return verdict.allowed
