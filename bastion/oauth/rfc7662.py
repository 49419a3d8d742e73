"""RFC 7662 token introspection responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["INACTIVE", "introspection_response"]

INACTIVE: dict[str, Any] = {"active": False}

_FIELDS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "act")


def introspection_response(claims: Mapping[str, Any], *, token_type: str) -> dict[str, Any]:
    """``active: true`` with the registered fields present in ``claims`` (§2.2)."""
    out: dict[str, Any] = {"active": True, "token_type": token_type}
    for name in _FIELDS:
        if name in claims and claims[name] is not None:
            out[name] = claims[name]
    return out
