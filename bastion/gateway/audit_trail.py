"""Issue 6: every gateway decision is recorded, and an allowed request's record is durable
before the upstream is called (fail closed: no record, no call).

Two middleware:
- ``AuditRefusals`` (outer): when any inner layer refuses a request — bearer authentication,
  the scope gate, the policy, the rate limiter — it records the refusal with the deciding rule
  before the response leaves.
- ``AuditAllowed`` (innermost, just before the proxy): records the allow decision (durable
  before the upstream is called), calls the upstream, then queues the upstream outcome and
  latency (written with the next batch; nothing waits for it).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from bastion.audit import (
    Actor,
    AuditEvent,
    AuditLog,
    AuditUnavailable,
    UpstreamOutcome,
    digest_arguments,
)
from bastion.audit import Principal as AuditPrincipal
from bastion.errors import JsonRpcError
from bastion.gateway.asgi import (
    CORRELATION,
    DECISION,
    ENVELOPE,
    MOUNT,
    PRINCIPAL,
    ASGIApp,
    Message,
    Receive,
    Refusal,
    Scope,
    Send,
)
from bastion.gateway.mount import Mount
from bastion.gateway.responses import send_jsonrpc_error
from bastion.mcp.jsonrpc import Envelope
from bastion.principal import Principal

__all__ = ["AuditAllowed", "AuditRefusals"]

log = logging.getLogger("bastion.audit")


def _refusal_of(decision: object) -> Refusal | None:
    """A refusal left by a gate: a ``Refusal``, or a policy decision that is not allow."""
    if isinstance(decision, Refusal):
        return decision
    effect = getattr(decision, "effect", None)
    if effect in ("deny", "step_up"):
        return Refusal("deny" if effect == "deny" else "step-up",
                       str(getattr(decision, "reason", "")), getattr(decision, "rule", None))
    return None


def _event(scope: Scope, kind: str, **fields: Any) -> AuditEvent:
    mount: Mount = scope[MOUNT]
    principal: Principal | None = scope.get(PRINCIPAL)
    envelope: Envelope | None = scope.get(ENVELOPE)
    return AuditEvent(
        kind,  # type: ignore[arg-type]
        correlation_id=scope.get(CORRELATION),
        principal=AuditPrincipal(principal.issuer, principal.subject) if principal else None,
        client_id=principal.client_id if principal else None,
        act=tuple(Actor(str(a.get("sub", "")), a.get("iss"), a.get("client_id"))
                  for a in principal.act) if principal else (),
        mount=mount.name,
        method=envelope.method if envelope else scope["method"],
        tool=envelope.name if envelope else None,
        arguments=_arguments_digest(scope, envelope, mount),
        **fields,
    )


_DIGEST = "bastion.audit.arguments"


def _arguments_digest(scope: Scope, envelope: Envelope | None, mount: Mount) -> Any:
    """The tool call's argument digest, computed once per request (the decision and the
    upstream outcome records both carry it)."""
    if envelope is None or envelope.method != "tools/call":
        return None
    digest = scope.get(_DIGEST)
    if digest is None:
        digest = scope[_DIGEST] = digest_arguments(envelope.arguments,
                                                   keep=mount.audit_keep_arguments)
    return digest


class AuditRefusals:
    def __init__(self, app: ASGIApp, *, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[CORRELATION] = secrets.token_hex(16)  # 128 random bits, as a UUID4's hex

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                refusal = _refusal_of(scope.get(DECISION))
                status = message["status"]
                if refusal is None and status in (400, 401, 403) and "authorization" in (
                        k.decode().lower() for k, _ in scope["headers"]) \
                        and scope.get(PRINCIPAL) is None:
                    refusal = Refusal("deny", "the access token was refused")
                if refusal is not None:
                    try:
                        await self.audit.append(_event(
                            scope, "gateway.decision", decision=refusal.decision,
                            rule=refusal.rule, reason=refusal.reason,
                            extra={"status": status}))
                    except AuditUnavailable:
                        log.error("a refusal could not be recorded (it is refused anyway)")
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", scope[CORRELATION].encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, recording_send)


class AuditAllowed:
    def __init__(self, app: ASGIApp, *, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        envelope: Envelope | None = scope.get(ENVELOPE)
        if envelope is not None and envelope.method is None:
            await self.app(scope, receive, send)  # a response to the server: no decision
            return
        decision = scope.get(DECISION)
        rule = getattr(decision, "rule", None)
        try:
            await self.audit.append(_event(scope, "gateway.decision", decision="allow",
                                           rule=rule))
        except AuditUnavailable:
            # Fail closed (invariant 4): what cannot be recorded does not happen.
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.INTERNAL_ERROR, "Audit trail unavailable; request refused",
                http_status=503, request_id=envelope.id if envelope else None))
            return
        started = time.perf_counter()
        status = 0

        async def timing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timing_send)
        finally:
            latency = (time.perf_counter() - started) * 1000
            outcome = "ok" if 200 <= status < 300 else \
                "timeout" if status == 504 else "unavailable" if status in (0, 502) else "error"
            # The answer has gone out: nothing waits for this record. It joins the next batch
            # (one commit per call, not two); if it cannot be written, that is logged.
            self.audit.record(_event(scope, "gateway.upstream", upstream=UpstreamOutcome(
                outcome, latency, status=status or None)))
