"""Request checks of the authorization and token endpoints, as small named functions, and the
one table that says which check runs where (CONVENTIONS 6).

A check reads the request, raises an ``OAuthError`` or fills in what it established. Checks
under ``authorize/before-redirect`` run before the redirect URI is trusted: their errors are
shown as a page, never sent to a URI (AS-17). Every later authorize error is redirected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from bastion.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
)
from bastion.oauth import rfc7636
from bastion.oauth.rfc8707 import canonical_resource
from bastion.oauth.scopes import parse_scopes
from bastion.server.clients import ClientAuthentication
from bastion.server.context import AuthorizationServer
from bastion.storage.base import ClientRecord

__all__ = [
    "AUTHORIZE_CHECKS",
    "CHECKS",
    "AuthorizeRequest",
    "TokenRequest",
    "run_checks",
]

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
MAX_PARAM_LENGTH = 4096


@dataclass(slots=True)
class AuthorizeRequest:
    params: Mapping[str, str]
    repeated: frozenset[str]
    client: ClientRecord | None = None
    redirect_uri: str = ""
    state: str | None = None
    code_challenge: str = ""
    resource: str = ""
    scopes: tuple[str, ...] = ()


@dataclass(slots=True)
class TokenRequest:
    form: Mapping[str, str]
    repeated: frozenset[str]
    authorization: str | None
    auth: ClientAuthentication | None = None
    grant_type: str = ""
    resource: str | None = None
    scopes: tuple[str, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> ClientRecord:
        assert self.auth is not None
        return self.auth.client


AuthorizeCheck = Callable[[AuthorizationServer, AuthorizeRequest], Awaitable[None]]
TokenCheck = Callable[[AuthorizationServer, TokenRequest], Awaitable[None]]


# --- shared rules ---------------------------------------------------------------------------


def configured_resource(server: AuthorizationServer, raw: str | None) -> str:
    """RFC 8707: the resource must name a configured protected resource (AS-24)."""
    if not raw:
        raise InvalidTarget("the resource parameter is required")
    try:
        resource = canonical_resource(raw)
    except ValueError as exc:
        raise InvalidTarget("the resource parameter is not a valid resource URI") from exc
    if resource not in server.resources:
        raise InvalidTarget("the resource is not served by this authorization server")
    return resource


def allowed_scopes(
    server: AuthorizationServer, client: ClientRecord, resource: str, raw: str | None
) -> tuple[str, ...]:
    """Requested scopes, each known to the resource and allowed to the client; the mount's
    base scopes when none were requested."""
    try:
        requested = parse_scopes(raw)
    except ValueError as exc:
        raise InvalidScope(str(exc)) from exc
    info = server.resources[resource]
    if not requested:
        requested = frozenset(info.default_scopes)
    unknown = sorted(requested - info.scopes)
    if unknown:
        raise InvalidScope(f"scope not available for this resource: {' '.join(unknown)}")
    # An administrator's scope limit binds a pre-registered client. A self-registered (DCR)
    # or self-described (CIMD) client's "scope" is only what it asked for at registration:
    # MCP step-up (SEP-835) asks for more later, and the user's consent is the control.
    limit = server.client_scope_limit(client.scope) if client.verified else None
    if limit is not None:
        refused = sorted(requested - limit - {"offline_access"})
        if refused:
            raise InvalidScope(f"scope not allowed for this client: {' '.join(refused)}")
    return tuple(sorted(requested))


# --- authorization endpoint: before the redirect URI is trusted --------------------------------


async def no_repeated_parameters(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    if req.repeated:
        raise InvalidRequest(f"parameter sent more than once: {', '.join(sorted(req.repeated))}")
    if any(len(v) > MAX_PARAM_LENGTH for v in req.params.values()):
        raise InvalidRequest("a parameter is too long")


async def client_is_known(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    client_id = req.params.get("client_id")
    if not client_id:
        raise InvalidRequest("client_id is required")
    req.client = await server.clients.get(client_id)


async def redirect_uri_is_registered(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    """Exact string comparison, no normalisation of any kind (AS-16, BP-05)."""
    assert req.client is not None
    uri = req.params.get("redirect_uri")
    if not uri:
        raise InvalidRequest("redirect_uri is required")
    if uri not in req.client.redirect_uris:
        raise InvalidRequest("redirect_uri is not registered for this client")
    req.redirect_uri = uri
    req.state = req.params.get("state")


# --- authorization endpoint: errors go back to the client ------------------------------------


async def response_type_is_code(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    rt = req.params.get("response_type")
    if not rt:
        raise InvalidRequest("response_type is required")
    if rt != "code":
        raise UnsupportedResponseType("only response_type=code is supported")
    assert req.client is not None
    if "authorization_code" not in req.client.grant_types:
        raise UnauthorizedClient("this client may not use the authorization code grant")


async def pkce_is_s256(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    req.code_challenge = rfc7636.check_challenge(
        req.params.get("code_challenge"), req.params.get("code_challenge_method")
    )


async def resource_is_configured(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    req.resource = configured_resource(server, req.params.get("resource"))


async def scopes_are_allowed(server: AuthorizationServer, req: AuthorizeRequest) -> None:
    assert req.client is not None
    req.scopes = allowed_scopes(server, req.client, req.resource, req.params.get("scope"))


# --- token endpoint -------------------------------------------------------------------------


async def form_has_no_repeats(server: AuthorizationServer, req: TokenRequest) -> None:
    if req.repeated:
        raise InvalidRequest(f"parameter sent more than once: {', '.join(sorted(req.repeated))}")


async def client_is_authenticated(server: AuthorizationServer, req: TokenRequest) -> None:
    req.auth = await server.clients.authenticate(
        req.form, req.authorization, audiences=(server.endpoint("token"), server.issuer))


async def grant_type_is_supported(server: AuthorizationServer, req: TokenRequest) -> None:
    grant = req.form.get("grant_type")
    if not grant:
        raise InvalidRequest("grant_type is required")
    if grant not in GRANT_TYPES:
        raise UnsupportedGrantType(f"grant_type {grant} is not supported")
    req.grant_type = grant


async def grant_type_allowed_for_client(server: AuthorizationServer, req: TokenRequest) -> None:
    if req.grant_type not in req.client.grant_types:
        raise UnauthorizedClient(f"this client may not use the {req.grant_type} grant")


async def code_parameters_present(server: AuthorizationServer, req: TokenRequest) -> None:
    for name in ("code", "redirect_uri"):
        if not req.form.get(name):
            raise InvalidRequest(f"{name} is required")
    rfc7636.check_verifier(req.form.get("code_verifier"))


async def refresh_token_present(server: AuthorizationServer, req: TokenRequest) -> None:
    if not req.form.get("refresh_token"):
        raise InvalidRequest("refresh_token is required")


async def client_is_operator_registered(server: AuthorizationServer, req: TokenRequest) -> None:
    """No user, no consent: only a client an operator created may get a token on its own
    behalf, whatever a self-registered (DCR) or self-described (CIMD) client's stored
    grant_types say (registrations made before this rule still hold client_credentials)."""
    if not req.client.verified:
        raise UnauthorizedClient(
            "client_credentials is only for clients created by the operator, "
            "not for self-registered ones")


async def client_is_confidential(server: AuthorizationServer, req: TokenRequest) -> None:
    assert req.auth is not None
    if not req.auth.confidential:
        raise InvalidClient("client_credentials needs an authenticated client")


async def token_resource_is_configured(server: AuthorizationServer, req: TokenRequest) -> None:
    req.resource = configured_resource(server, req.form.get("resource"))


async def token_scopes_are_allowed(server: AuthorizationServer, req: TokenRequest) -> None:
    assert req.resource is not None
    scopes = allowed_scopes(server, req.client, req.resource, req.form.get("scope"))
    req.scopes = tuple(s for s in scopes if s != "offline_access")


AUTHORIZE_CHECKS: Mapping[str, Sequence[AuthorizeCheck]] = {
    "authorize/before-redirect": (
        no_repeated_parameters, client_is_known, redirect_uri_is_registered,
    ),
    "authorize": (
        response_type_is_code, pkce_is_s256, resource_is_configured, scopes_are_allowed,
    ),
}

CHECKS: Mapping[str, Sequence[TokenCheck]] = {
    "token": (form_has_no_repeats, client_is_authenticated, grant_type_is_supported,
              grant_type_allowed_for_client),
    "token/authorization_code": (code_parameters_present,),
    "token/refresh_token": (refresh_token_present,),
    "token/client_credentials": (client_is_operator_registered, client_is_confidential,
                                 token_resource_is_configured, token_scopes_are_allowed),
    "revoke": (form_has_no_repeats, client_is_authenticated),
    "introspect": (form_has_no_repeats, client_is_authenticated, client_is_confidential),
}


R = TypeVar("R", AuthorizeRequest, TokenRequest)


async def run_checks(
    server: AuthorizationServer,
    req: R,
    checks: Sequence[Callable[[AuthorizationServer, R], Awaitable[None]]],
) -> None:
    for check in checks:
        await check(server, req)
