"""What the authorization server records in the audit trail: issuance, refresh, revocation,
consent and registration. One helper, so every endpoint fails closed the same way."""

from __future__ import annotations

import logging
from typing import Any

from bastion.audit import AuditEvent, AuditUnavailable
from bastion.audit import Principal as AuditPrincipal
from bastion.errors import TemporarilyUnavailable
from bastion.server.context import AuthorizationServer

__all__ = ["record"]

log = logging.getLogger("bastion.audit")


async def record(server: AuthorizationServer, kind: str, *, subject: str | None = None,
                 client_id: str | None = None, required: bool = True,
                 **extra: Any) -> None:
    """Append one event. ``required``: the caller's action must not stand unrecorded
    (raises ``TemporarilyUnavailable``, 503); otherwise a failure is logged."""
    if server.audit is None:
        return
    event = AuditEvent(
        kind,  # type: ignore[arg-type]
        principal=AuditPrincipal(server.issuer, subject) if subject else None,
        client_id=client_id,
        extra={k: v for k, v in extra.items() if v is not None},
    )
    try:
        await server.audit.append(event)
    except AuditUnavailable as exc:
        if required:
            raise TemporarilyUnavailable("the audit trail is unavailable") from exc
        log.error("%s could not be recorded: %s", kind, exc)
