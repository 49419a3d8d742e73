"""Who a request comes from, as established by a verified access token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    issuer: str
    subject: str
    client_id: str
    scopes: frozenset[str]
    audience: tuple[str, ...]
    expires_at: float
    token_id: str | None = None
    # RFC 8693 §4.1 delegation chain, outermost actor first: ({"sub": ...}, ...)
    act: tuple[Mapping[str, Any], ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def binding(self) -> tuple[str, str, str]:
        """What sessions and state handles are bound to (invariant 2)."""
        return (self.issuer, self.subject, self.client_id)
