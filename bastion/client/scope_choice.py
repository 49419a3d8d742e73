"""Steps: which scopes to request (CL-09..CL-14, CL-35).

``None`` means "omit the ``scope`` parameter", which is different from an empty request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bastion.client.challenge import Challenge
from bastion.client.discovery import AuthorizationServerMetadata, ResourceMetadata

__all__ = [
    "OFFLINE_ACCESS",
    "StepUpBudget",
    "initial_scopes",
    "step_up_scopes",
    "with_offline_access",
]

OFFLINE_ACCESS = "offline_access"


def initial_scopes(
    challenge: Challenge | None, prm: ResourceMetadata | None
) -> tuple[str, ...] | None:
    """CL-09: the challenge's ``scope``; else every PRM ``scopes_supported``; else omit.

    The challenge is authoritative even for scopes PRM does not list (CL-10), and nothing is
    added that neither asked for (CL-11).
    """
    if challenge is not None and challenge.scopes:
        return challenge.scopes
    if prm is not None and prm.scopes_supported:
        return tuple(sorted(set(prm.scopes_supported)))
    return None


def with_offline_access(
    scopes: tuple[str, ...] | None, metadata: AuthorizationServerMetadata, *, wanted: bool
) -> tuple[str, ...] | None:
    """CL-35: add ``offline_access`` only when the *AS* lists it and a refresh token is wanted.

    An omitted scope stays omitted: asking for ``offline_access`` alone would narrow the
    default grant the AS would otherwise give.
    """
    if not wanted or scopes is None or OFFLINE_ACCESS in scopes:
        return scopes
    if metadata.scopes_supported is None or OFFLINE_ACCESS not in metadata.scopes_supported:
        return scopes
    return tuple(sorted({*scopes, OFFLINE_ACCESS}))


def step_up_scopes(previous: Iterable[str] | None, challenged: Iterable[str] | None) -> tuple[
    str, ...
] | None:
    """CL-13: the union of what was requested before and what the 403 challenge asks for."""
    union = set(previous or ()) | set(challenged or ())
    return tuple(sorted(union)) if union else None


@dataclass
class StepUpBudget:
    """CL-14: at most ``limit`` re-authorizations per (resource, operation); a success resets."""

    limit: int = 2
    _used: dict[tuple[str, str], int] = field(default_factory=dict)

    def take(self, resource: str, operation: str) -> bool:
        key = (resource, operation)
        if self._used.get(key, 0) >= self.limit:
            return False
        self._used[key] = self._used.get(key, 0) + 1
        return True

    def attempts(self, resource: str, operation: str) -> int:
        return self._used.get((resource, operation), 0)

    def succeeded(self, resource: str, operation: str) -> None:
        self._used.pop((resource, operation), None)
