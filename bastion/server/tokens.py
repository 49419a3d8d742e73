"""RFC 9068 access tokens, minted by the built-in authorization server."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from joserfc import jwt

from bastion.keys import SigningKeys
from bastion.oauth.scopes import format_scopes

__all__ = ["mint_access_token", "new_token_id"]

# Claims the caller may not override through ``extra``.
_RESERVED = frozenset({"iss", "sub", "aud", "client_id", "scope", "jti", "iat", "nbf", "exp",
                       "act"})


def new_token_id() -> str:
    return secrets.token_urlsafe(24)


def mint_access_token(
    keys: SigningKeys,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    audience: str | Iterable[str],
    scopes: Iterable[str],
    lifetime: int,
    now: float,
    act: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    jti: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Sign an ``at+jwt`` with the current key; return ``(token, claims)``.

    ``aud`` is the single resource when one is given (the usual MCP case), else a list.
    """
    if lifetime <= 0:
        raise ValueError("lifetime must be positive")
    auds = [audience] if isinstance(audience, str) else list(audience)
    if not auds:
        raise ValueError("an access token needs an audience")
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": auds[0] if len(auds) == 1 else auds,
        "client_id": client_id,
        "scope": format_scopes(scopes),
        "jti": jti or new_token_id(),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime),
    }
    if act is not None:
        claims["act"] = dict(act)
    for name, value in (extra or {}).items():
        if name in _RESERVED:
            raise ValueError(f"claim {name!r} cannot be set through extra")
        claims[name] = value
    key = keys.current
    header = {"alg": key.algorithm, "typ": "at+jwt", "kid": key.kid}
    token = jwt.encode(header, claims, key.key, algorithms=[key.algorithm])
    return token, claims
