"""The token endpoint: authorization_code, refresh_token and client_credentials grants.

Refresh tokens are rotated on every use, for public and confidential clients alike. Reuse of a
rotated token revokes the whole family and the access tokens issued from it, except within
``authorization_server.refresh_reuse_grace_seconds`` (default 10 s) of its first use: an honest
client that lost the response to its refresh may retry once in that window and gets a new pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
)
from bastion.oauth import rfc7636
from bastion.oauth.scopes import format_scopes, parse_scopes
from bastion.server.audit_events import record
from bastion.server.authorize import single_params
from bastion.server.checks import CHECKS, TokenRequest, configured_resource, run_checks
from bastion.server.context import AuthorizationServer, new_secret
from bastion.server.responses import oauth_error_response, token_response
from bastion.server.tokens import mint_access_token, new_token_id
from bastion.storage.base import RefreshToken, StoreError, hash_secret

__all__ = ["token_endpoint"]

MAX_FORM_FIELDS = 32


async def token_endpoint(server: AuthorizationServer, request: Request) -> Response:
    req: TokenRequest | None = None
    try:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise InvalidRequest("the token request must be application/x-www-form-urlencoded")
        async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as raw:
            form, repeated = single_params(raw)
        req = TokenRequest(form=form, repeated=repeated,
                           authorization=request.headers.get("authorization"))
        await run_checks(server, req, CHECKS["token"])
        await run_checks(server, req, CHECKS["token/" + req.grant_type])
        if req.grant_type == "authorization_code":
            payload = await _authorization_code(server, req)
        elif req.grant_type == "refresh_token":
            payload = await _refresh_token(server, req)
        else:
            payload = await _client_credentials(server, req)
        await _record_issuance(server, req, payload)
        response = payload.response
    except OAuthError as exc:
        basic = bool(req and req.authorization and req.authorization.lower().startswith("basic"))
        return oauth_error_response(exc, basic_auth_attempted=basic)
    except StoreError:
        return oauth_error_response(ServerError("storage is unavailable"))
    return token_response(response)


@dataclass(frozen=True, slots=True)
class Issued:
    """A token response, with what the audit record (and a fail-closed revocation) needs."""

    response: dict[str, Any]
    claims: dict[str, Any]
    family_id: str | None


async def _record_issuance(server: AuthorizationServer, req: TokenRequest,
                           payload: Issued) -> None:
    """Fail closed: a token whose issuance cannot be recorded is revoked before the error."""
    claims, family = payload.claims, payload.family_id
    kind = "token.refreshed" if req.grant_type == "refresh_token" else "token.issued"
    try:
        await record(server, kind, subject=claims["sub"], client_id=claims["client_id"],
                     grant_type=req.grant_type, resource=claims["aud"],
                     scope=payload.response["scope"], jti=claims["jti"],
                     refresh_token_issued="refresh_token" in payload.response)
    except TemporarilyUnavailable:
        now = server.clock.now()
        await server.store.revoke_access_token(claims["jti"], float(claims["exp"]))
        if family is not None:
            await server.store.revoke_family(family, now)
        raise


async def _issue(
    server: AuthorizationServer,
    *,
    subject: str,
    client_id: str,
    resource: str,
    scopes: tuple[str, ...],
    family_id: str | None,
    jti: str | None = None,
    refresh_token: str | None = None,
) -> Issued:
    settings = server.config.authorization_server
    now = server.clock.now()
    at_scopes = tuple(s for s in scopes if s != "offline_access")
    token, claims = mint_access_token(
        server.keys,
        issuer=server.issuer,
        subject=subject,
        client_id=client_id,
        audience=resource,
        scopes=at_scopes,
        lifetime=settings.access_token_lifetime_seconds,
        now=now,
        jti=jti,
    )
    await server.store.record_access_token(claims["jti"], family_id, float(claims["exp"]))
    payload: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_lifetime_seconds,
        "scope": format_scopes(scopes),
    }
    if refresh_token is not None:
        payload["refresh_token"] = refresh_token
    return Issued(payload, claims, family_id)


async def _authorization_code(server: AuthorizationServer, req: TokenRequest) -> Issued:
    now = server.clock.now()
    redemption = await server.store.redeem_code(hash_secret(req.form["code"]), now)
    code = redemption.code
    if redemption.status == "unknown" or code is None:
        raise InvalidGrant("the authorization code is not valid")
    if redemption.status == "replayed":
        # RFC 6749 §4.1.2 / OAuth 2.1 §4.1.3: revoke what the code produced.
        await server.store.revoke_family(code.family_id, now)
        await server.store.revoke_access_token(
            code.access_jti, now + server.config.authorization_server.access_token_lifetime_seconds
        )
        await record(server, "token.reuse_detected", subject=code.subject,
                     client_id=req.client.client_id, required=False,
                     what="authorization_code", issued_to=code.client_id, grant_revoked=True)
        raise InvalidGrant("the authorization code was already used")
    if code.expires_at <= now:
        raise InvalidGrant("the authorization code has expired")
    if code.client_id != req.client.client_id:
        await server.store.revoke_family(code.family_id, now)
        raise InvalidGrant("the authorization code was issued to another client")
    if code.redirect_uri != req.form["redirect_uri"]:
        raise InvalidGrant("redirect_uri differs from the authorization request")
    if not rfc7636.verify_s256(req.form["code_verifier"], code.code_challenge):
        raise InvalidGrant("the code_verifier does not match the code_challenge")
    requested_resource = req.form.get("resource")
    if requested_resource is not None and (
        configured_resource(server, requested_resource) != code.resource
    ):

        raise InvalidTarget("resource differs from the authorization request")
    refresh: str | None = None
    if code.issue_refresh:
        refresh = new_secret()
        settings = server.config.authorization_server
        await server.store.create_refresh_token(
            RefreshToken(
                token_hash=hash_secret(refresh),
                family_id=code.family_id,
                client_id=code.client_id,
                subject=code.subject,
                scopes=code.scopes,
                resources=(code.resource,),
                created_at=now,
                expires_at=now + settings.refresh_token_lifetime_seconds,
            )
        )
    await server.store.touch_client(code.client_id, now)
    return await _issue(
        server, subject=code.subject, client_id=code.client_id, resource=code.resource,
        scopes=code.scopes, family_id=code.family_id, jti=code.access_jti, refresh_token=refresh,
    )


async def _refresh_token(server: AuthorizationServer, req: TokenRequest) -> Issued:
    settings = server.config.authorization_server
    now = server.clock.now()
    old_hash = hash_secret(req.form["refresh_token"])
    current = await server.store.get_refresh_token(old_hash)
    if current is None or current.revoked or current.expires_at <= now:
        raise InvalidGrant("the refresh token is not valid")
    if current.client_id != req.client.client_id:
        raise InvalidGrant("the refresh token was issued to another client")
    # The access token may be narrowed, never widened (RFC 6749 §6, RFC 8707 §2.2).
    raw_resource = req.form.get("resource")
    resource = current.resources[0]
    if raw_resource is not None:
        resource = configured_resource(server, raw_resource)
        if resource not in current.resources:

            raise InvalidTarget("resource was not part of the original grant")
    scopes = current.scopes
    if "scope" in req.form:
        try:
            asked = parse_scopes(req.form["scope"])
        except ValueError as exc:
            raise InvalidScope(str(exc)) from exc
        if not asked <= set(current.scopes):
            raise InvalidScope("scope exceeds the original grant")
        scopes = tuple(sorted(asked))
    new_refresh = new_secret()
    outcome = await server.store.rotate_refresh_token(
        old_hash, hash_secret(new_refresh), now + settings.refresh_token_lifetime_seconds, now,
        float(settings.refresh_reuse_grace_seconds),
    )
    if outcome.status == "reused":
        await record(server, "token.reuse_detected", subject=current.subject,
                     client_id=current.client_id, required=False, what="refresh_token",
                     grant_revoked=True)
        raise InvalidGrant("the refresh token was already used; the grant has been revoked")
    if outcome.status != "rotated" and outcome.status != "grace":
        raise InvalidGrant("the refresh token is not valid")
    return await _issue(
        server, subject=current.subject, client_id=current.client_id, resource=resource,
        scopes=scopes, family_id=current.family_id, refresh_token=new_refresh,
    )


async def _client_credentials(server: AuthorizationServer, req: TokenRequest) -> Issued:
    assert req.resource is not None and req.scopes is not None
    await server.store.touch_client(req.client.client_id, server.clock.now())
    return await _issue(
        server, subject=req.client.client_id, client_id=req.client.client_id,
        resource=req.resource, scopes=req.scopes, family_id=None, jti=new_token_id(),
    )
