"""Minimal ASGI typing and the scope keys the gateway's middleware pass down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "BODY",
    "CORRELATION",
    "DECISION",
    "ENVELOPE",
    "ERA",
    "MOUNT",
    "PRINCIPAL",
    "ASGIApp",
    "Receive",
    "Refusal",
    "Scope",
    "Send",
    "header",
    "headers_dict",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Namespaced keys in the ASGI scope.
MOUNT = "bastion.mount"
PRINCIPAL = "bastion.principal"
BODY = "bastion.body"
ENVELOPE = "bastion.envelope"
ERA = "bastion.era"
HEADERS = "bastion.headers"
DECISION = "bastion.decision"
CORRELATION = "bastion.correlation_id"


class Refusal:
    """What a refusing layer leaves in the scope (under ``DECISION``) for the audit trail."""

    __slots__ = ("decision", "reason", "rule")

    def __init__(self, decision: str, reason: str, rule: str | None = None) -> None:
        self.decision, self.reason, self.rule = decision, reason, rule


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (name in lower case), decoded as latin-1."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def headers_dict(scope: Scope) -> dict[str, str]:
    """Request headers as a dict (lower-case names; first value wins). Cached in the scope."""
    cached = scope.get(HEADERS)
    if cached is None:
        cached = {}
        for key, value in scope["headers"]:
            cached.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        scope[HEADERS] = cached
    result: dict[str, str] = cached
    return result
