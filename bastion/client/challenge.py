"""Step: read the ``WWW-Authenticate`` challenge of a 401 or 403 (RFC 6750 §3, RFC 9728 §5.1).

The header grammar lives in ``bastion.oauth.rfc6750.parse_challenges``; this picks the
challenge the client acts on and turns it into typed facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bastion.oauth.rfc6750 import parse_challenges
from bastion.oauth.scopes import parse_scopes

__all__ = ["Challenge", "parse_challenge"]

_SCHEMES = ("bearer", "dpop")


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a protected resource asked for. ``scopes`` is ``None`` when no ``scope`` was sent."""

    scheme: str
    error: str | None = None
    scopes: tuple[str, ...] | None = None
    resource_metadata: str | None = None

    @property
    def insufficient_scope(self) -> bool:
        return self.error == "insufficient_scope"


def parse_challenge(header_values: Iterable[str]) -> Challenge | None:
    """The first Bearer (or DPoP) challenge in the ``WWW-Authenticate`` field values, if any.

    Several field lines are one list (RFC 9110 §5.3). A ``scope`` with characters RFC 6749
    forbids is ignored rather than trusted.
    """
    joined = ", ".join(v for v in header_values if v.strip())
    if not joined:
        return None
    for scheme, params in parse_challenges(joined):
        if scheme.lower() not in _SCHEMES:
            continue
        try:
            scopes = params.get("scope")
            parsed = None if scopes is None else tuple(sorted(parse_scopes(scopes)))
        except ValueError:
            parsed = None
        return Challenge(
            scheme=scheme.lower(),
            error=params.get("error") or None,
            scopes=parsed,
            resource_metadata=params.get("resource_metadata") or None,
        )
    return None
