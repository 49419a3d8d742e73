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


_OWS = " \t"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (name in lower case), decoded as latin-1, without
    the optional whitespace around it (RFC 9110 §5.5: it is not part of the value; h11 strips
    it, httptools leaves trailing whitespace in)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1")).strip(_OWS)
    return None


def headers_dict(scope: Scope) -> dict[str, str]:
    """Request headers as a dict (lower-case names; first value wins; values without the
    optional whitespace around them, as ``header``). Cached in the scope."""
    cached = scope.get(HEADERS)
    if cached is None:
        cached = {}
        for key, value in scope["headers"]:
            cached.setdefault(key.decode("latin-1").lower(), value.decode("latin-1").strip(_OWS))
        scope[HEADERS] = cached
    result: dict[str, str] = cached
    return result
