"""RFC 9068 JWT profile for OAuth 2.0 access tokens: verification at the resource server.

Signature checking is delegated to joserfc with an explicit algorithm allow-list; the key set
holds only asymmetric public keys, so ``none`` and HS/RS key confusion cannot verify.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bastion.errors import InvalidToken
from bastion.oauth.rfc8707 import same_resource
from bastion.oauth.scopes import parse_scopes
from bastion.principal import Principal

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "check_claims",
    "read_unverified_header",
    "verify_access_token",
]

ASYMMETRIC_ALGORITHMS: tuple[str, ...] = (
    "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
)
MAX_JWT_LENGTH = 16 * 1024
_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})


def read_unverified_header(token: str) -> Mapping[str, Any]:
    """The JOSE header, for key selection only; nothing in it is trusted."""
    from joserfc.jws import extract_compact

    try:
        return extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError, RecursionError) as exc:
        raise InvalidToken("the access token is not a well-formed JWT") from exc


def verify_access_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    audience: str,
    algorithms: Collection[str],
    now: float,
    leeway: float = 30.0,
    require_at_jwt_typ: bool = True,
) -> Principal:
    if len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
        raise InvalidToken("the access token is not a well-formed JWT")
    header = read_unverified_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidToken("the access token's signing algorithm is not accepted")
    try:
        decoded = jwt.decode(token, keys, algorithms=list(algorithms))
    except JoseError as exc:
        raise InvalidToken("the access token's signature does not verify") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidToken("the access token is not a well-formed JWT") from exc
    return check_claims(
        decoded.claims,
        decoded.header,
        issuer=issuer,
        audience=audience,
        now=now,
        leeway=leeway,
        require_at_jwt_typ=require_at_jwt_typ,
    )


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"the access token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"the access token's {name} claim is not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    header: Mapping[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: float,
    require_at_jwt_typ: bool,
) -> Principal:
    """The claim checks of RFC 9068 §4 and MCP (RS-08..RS-11), after the signature."""
    if require_at_jwt_typ:
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise InvalidToken("the access token's typ is not at+jwt")
    if claims.get("iss") != issuer:
        raise InvalidToken("the access token was issued by another issuer")
    raw_aud = claims.get("aud")
    auds: tuple[str, ...]
    if isinstance(raw_aud, str):
        auds = (raw_aud,)
    elif isinstance(raw_aud, list) and all(isinstance(a, str) for a in raw_aud):
        auds = tuple(raw_aud)
    else:
        raise InvalidToken("the access token has no audience")
    if not any(same_resource(a, audience) for a in auds):
        raise InvalidToken("the access token was not issued for this resource")
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if now > exp + leeway:
        raise InvalidToken("the access token has expired")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now + leeway < nbf:
        raise InvalidToken("the access token is not valid yet")
    iat = _number(claims, "iat", required=False)
    if iat is not None and now + leeway < iat:
        raise InvalidToken("the access token was issued in the future")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("the access token has no subject")
    client_id = claims.get("client_id", claims.get("azp", ""))
    if not isinstance(client_id, str):
        raise InvalidToken("the access token's client_id is not a string")
    raw_scope = claims.get("scope", claims.get("scp", ""))
    try:
        if isinstance(raw_scope, list):
            scopes = frozenset(str(s) for s in raw_scope)
        elif isinstance(raw_scope, str):
            scopes = parse_scopes(raw_scope)
        else:
            raise ValueError("scope")
    except ValueError as exc:
        raise InvalidToken("the access token's scope claim is malformed") from exc
    jti = claims.get("jti")
    return Principal(
        issuer=issuer,
        subject=sub,
        client_id=client_id,
        scopes=scopes,
        audience=auds,
        expires_at=exp,
        token_id=jti if isinstance(jti, str) else None,
        act=_act_chain(claims.get("act")),
        claims=dict(claims),
    )


def _act_chain(act: object) -> tuple[Mapping[str, Any], ...]:
    chain: list[Mapping[str, Any]] = []
    while isinstance(act, dict) and len(chain) < 16:
        chain.append({k: v for k, v in act.items() if k != "act"})
        act = act.get("act")
    return tuple(chain)
