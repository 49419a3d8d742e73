"""RFC 7523 §2.2 / §3: JWT client assertions (``private_key_jwt``), checked at the AS.

Signature checking is joserfc's, with asymmetric algorithms only; the claim checks are pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import InvalidClient
from bastion.oauth.rfc9068 import ASYMMETRIC_ALGORITHMS, read_unverified_header

__all__ = ["ASSERTION_TYPE", "MAX_ASSERTION_LIFETIME", "check_assertion_claims",
           "verify_client_assertion"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 600.0
LEEWAY = 30.0


def check_assertion_claims(
    claims: Mapping[str, Any], *, client_id: str, audiences: Collection[str], now: float
) -> tuple[str, float]:
    """``iss`` and ``sub`` are the client, ``aud`` names this AS, ``exp`` is near; returns
    ``(jti, exp)`` for single-use tracking."""
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient("the client assertion's iss and sub must be the client_id")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(a in audiences for a in auds if isinstance(a, str)):
        raise InvalidClient("the client assertion is not addressed to this server")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidClient("the client assertion has no exp")
    if now > exp + LEEWAY:
        raise InvalidClient("the client assertion has expired")
    if exp - now > MAX_ASSERTION_LIFETIME:
        raise InvalidClient("the client assertion lives too long")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and now + LEEWAY < nbf:
        raise InvalidClient("the client assertion is not valid yet")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClient("the client assertion needs a jti")
    return jti, float(exp)


def verify_client_assertion(
    assertion: str, keys: KeySet, *, client_id: str, audiences: Collection[str], now: float,
    algorithms: Collection[str] = ASYMMETRIC_ALGORITHMS,
) -> tuple[str, float]:
    if len(assertion) > 16 * 1024 or assertion.count(".") != 2:
        raise InvalidClient("the client assertion is not a JWT")
    try:
        alg = read_unverified_header(assertion).get("alg")
    except Exception as exc:  # the rfc9068 reader raises the RS error type
        raise InvalidClient("the client assertion is not a JWT") from exc
    if alg not in algorithms:
        raise InvalidClient("the client assertion's algorithm is not accepted")
    try:
        token = jwt.decode(assertion, keys, algorithms=list(algorithms))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidClient("the client assertion's signature does not verify") from exc
    return check_assertion_claims(token.claims, client_id=client_id, audiences=audiences,
                                  now=now)
