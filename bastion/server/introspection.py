"""RFC 7009 revocation and RFC 7662 introspection endpoints."""

from __future__ import annotations

from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import InvalidRequest, OAuthError, ServerError
from bastion.oauth.rfc7662 import INACTIVE, introspection_response
from bastion.server.audit_events import record
from bastion.server.authorize import single_params
from bastion.server.checks import CHECKS, TokenRequest, run_checks
from bastion.server.context import AuthorizationServer
from bastion.server.responses import NO_STORE, json_response, oauth_error_response
from bastion.storage.base import StoreError, hash_secret

__all__ = ["introspect_endpoint", "revoke_endpoint"]

MAX_TOKEN_LENGTH = 16 * 1024


async def _read(server: AuthorizationServer, request: Request, table: str) -> TokenRequest:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("the request must be application/x-www-form-urlencoded")
    async with request.form(max_files=0, max_fields=16) as raw:
        form, repeated = single_params(raw)
    req = TokenRequest(form=form, repeated=repeated,
                       authorization=request.headers.get("authorization"))
    await run_checks(server, req, CHECKS[table])
    token = form.get("token")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidRequest("token is required")
    return req


def _jwt_claims(server: AuthorizationServer, token: str) -> dict[str, Any] | None:
    """Claims of an access token this server signed and that has not expired, else None."""
    if token.count(".") != 2:
        return None
    try:
        decoded = jwt.decode(token, server.keys.public_key_set(),
                             algorithms=list(server.keys.algorithms))
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    claims = dict(decoded.claims)
    exp = claims.get("exp")
    if claims.get("iss") != server.issuer or not isinstance(exp, int | float):
        return None
    if exp <= server.clock.now():
        return None
    return claims


def _basic(req: TokenRequest | None) -> bool:
    return bool(req and req.authorization and req.authorization.lower().startswith("basic"))


async def revoke_endpoint(server: AuthorizationServer, request: Request) -> Response:
    """Always 200 for a token that is unknown or not the caller's (RFC 7009 §2.2)."""
    req: TokenRequest | None = None
    try:
        req = await _read(server, request, "revoke")
        token = req.form["token"]
        now = server.clock.now()
        rt = await server.store.get_refresh_token(hash_secret(token))
        if rt is not None:
            if rt.client_id == req.client.client_id:
                await server.store.revoke_family(rt.family_id, now)
                await record(server, "token.revoked", subject=rt.subject,
                             client_id=rt.client_id, required=False, what="refresh_token")
        else:
            claims = _jwt_claims(server, token)
            if claims is not None and claims.get("client_id") == req.client.client_id:
                jti = claims.get("jti")
                if isinstance(jti, str):
                    await server.store.revoke_access_token(jti, float(claims["exp"]))
                    await record(server, "token.revoked", subject=claims.get("sub"),
                                 client_id=req.client.client_id, required=False,
                                 what="access_token", jti=jti)
    except OAuthError as exc:
        return oauth_error_response(exc, basic_auth_attempted=_basic(req))
    except StoreError:
        return oauth_error_response(ServerError("storage is unavailable"))
    return json_response({}, headers=NO_STORE)


async def introspect_endpoint(server: AuthorizationServer, request: Request) -> Response:
    """For authenticated confidential clients only (resource servers)."""
    req: TokenRequest | None = None
    try:
        req = await _read(server, request, "introspect")
        token = req.form["token"]
        now = server.clock.now()
        result: dict[str, Any] = INACTIVE
        claims = _jwt_claims(server, token)
        if claims is not None:
            jti = claims.get("jti")
            if not (isinstance(jti, str) and await server.store.is_access_token_revoked(jti)):
                result = introspection_response(claims, token_type="Bearer")  # noqa: S106
        else:
            rt = await server.store.get_refresh_token(hash_secret(token))
            if rt is not None and not rt.revoked and rt.used_at is None and rt.expires_at > now:
                result = introspection_response(
                    {"scope": " ".join(rt.scopes), "client_id": rt.client_id, "sub": rt.subject,
                     "iss": server.issuer, "exp": int(rt.expires_at), "iat": int(rt.created_at),
                     "aud": list(rt.resources)},
                    token_type="refresh_token",  # noqa: S106
                )
    except OAuthError as exc:
        return oauth_error_response(exc, basic_auth_attempted=_basic(req))
    except StoreError:
        return oauth_error_response(ServerError("storage is unavailable"))
    return json_response(result, headers=NO_STORE)
