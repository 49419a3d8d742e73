"""How tokens are obtained from an authorization server once it is known.

One class per grant: ``AuthorizationCodeGrant`` (users, through an ``Authorizer``),
``ClientCredentialsGrant`` (machine clients: client_secret_basic/post, private_key_jwt),
``JwtBearerGrant`` (workload identity, RFC 7523) and ``IdJagGrant`` (enterprise-managed
authorization: token exchange at the IdP, then the ID-JAG as a JWT bearer grant).
``GrantContext`` carries the AS, the resource and the I/O they share: every request goes
through the SSRF-safe fetcher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol
from urllib.parse import urlsplit

from bastion.client.authorization import begin_authorization, validate_callback
from bastion.client.authorizers import Authorizer
from bastion.client.discovery import AuthorizationServerMetadata
from bastion.client.errors import RegistrationError, TokenEndpointError
from bastion.client.registration import (
    ClientCredentials,
    ClientProfile,
    DynamicRegistration,
    choose_registration,
    dcr_request,
    parse_dcr_response,
)
from bastion.client.scope_choice import with_offline_access
from bastion.client.store import TokenStore
from bastion.client.token_requests import (
    TOKEN_EXCHANGE,
    TokenSet,
    authorization_code_form,
    client_authentication,
    client_credentials_form,
    jwt_bearer_form,
    parse_token_response,
    refresh_form,
)
from bastion.clock import Clock
from bastion.net.fetcher import SafeFetcher, parse_json_object
from bastion.net.policy import FetchError

__all__ = [
    "AuthorizationCodeGrant",
    "ClientCredentialsGrant",
    "Grant",
    "GrantContext",
    "IdJagGrant",
    "JwtBearerGrant",
]

ID_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a URN
ID_JAG_TYPE: Final = "urn:ietf:params:oauth:token-type:id-jag"


@dataclass
class GrantContext:
    """The authorization server, the resource, and the shared I/O for one grant."""

    metadata: AuthorizationServerMetadata
    resource: str
    fetcher: SafeFetcher
    store: TokenStore
    profile: ClientProfile
    clock: Clock

    async def client(self, redirect_uri: str) -> ClientCredentials:
        """CL-15..CL-21: the client identity for this AS, registering when that is the way."""
        stored = self.store.load_client(self.metadata.issuer)
        choice = choose_registration(self.profile, self.metadata, stored)
        if isinstance(choice, ClientCredentials):
            return choice
        return await self._register(choice, redirect_uri)

    def existing_client(self) -> ClientCredentials | None:
        """The identity to refresh with, without registering anew."""
        choice = choose_registration(self.profile, self.metadata,
                                     self.store.load_client(self.metadata.issuer))
        return choice if isinstance(choice, ClientCredentials) else None

    async def _register(self, dcr: DynamicRegistration, redirect_uri: str) -> ClientCredentials:
        body = dcr_request(self.profile, redirect_uri, self.metadata)
        host = urlsplit(dcr.endpoint).netloc
        try:
            async with self.fetcher.client() as http:
                response = await http.post(dcr.endpoint, json=body)
                raw = await response.aread()
        except FetchError as exc:
            raise RegistrationError(f"registration at {host} failed: {exc.detail}") from exc
        try:
            doc = parse_json_object(raw, host)
        except FetchError:
            doc = {}
        client = parse_dcr_response(response.status_code, doc, self.metadata)
        self.store.save_client(client)
        return client

    async def token_request(
        self,
        form: Mapping[str, str],
        client: ClientCredentials,
        *,
        requested_scopes: tuple[str, ...] | None,
        previous_refresh_token: str | None = None,
        endpoint: str | None = None,
        any_token_type: bool = False,
    ) -> TokenSet:
        now = self.clock.now()
        body, headers = client_authentication(form, client, issuer=self.metadata.issuer, now=now)
        url = endpoint or self.metadata.token_endpoint
        try:
            result = await self.fetcher.post_form(url, body, headers)
        except FetchError as exc:
            raise TokenEndpointError("request_failed", exc.detail) from exc
        return parse_token_response(result.status, result.body, now=now,
                                    requested_scopes=requested_scopes,
                                    previous_refresh_token=previous_refresh_token,
                                    any_token_type=any_token_type)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """Exchange the refresh token (``resource`` included, CL-24)."""
        client = self.existing_client()
        if tokens.refresh_token is None or client is None:
            raise TokenEndpointError("invalid_grant", "no refresh token or client to use it")
        return await self.token_request(
            refresh_form(tokens.refresh_token, self.resource), client,
            requested_scopes=tokens.requested_scopes,
            previous_refresh_token=tokens.refresh_token)


class Grant(Protocol):
    """Obtains a fresh token set for ``ctx.resource`` with ``scopes`` (``None``: omit)."""

    refreshable: bool

    async def obtain(self, ctx: GrantContext, scopes: tuple[str, ...] | None) -> TokenSet: ...


class AuthorizationCodeGrant:
    """The user's grant: registration, PKCE authorization request, callback, code exchange."""

    refreshable = True

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def obtain(self, ctx: GrantContext, scopes: tuple[str, ...] | None) -> TokenSet:
        client = await ctx.client(self.authorizer.redirect_uri)
        scopes = with_offline_access(scopes, ctx.metadata, wanted=ctx.profile.want_refresh_token)
        url, pending = begin_authorization(
            ctx.metadata, client, redirect_uri=self.authorizer.redirect_uri,
            resource=ctx.resource, scopes=scopes,
            allow_http_loopback=ctx.fetcher.policy.allow_http_loopback)
        params = await self.authorizer.authorize(url)
        code = validate_callback(pending, params)
        return await ctx.token_request(authorization_code_form(pending, code), client,
                                       requested_scopes=scopes)


@dataclass
class _IssuerPin:
    """Machine credentials are configured for one AS. With ``issuer`` unset they are bound to
    the first AS the server names, and never offered to a different one afterwards (CL-21)."""

    issuer: str | None = None

    def check(self, metadata: AuthorizationServerMetadata) -> str:
        if self.issuer is None:
            self.issuer = metadata.issuer
        elif self.issuer != metadata.issuer:
            raise RegistrationError(
                f"these client credentials belong to {self.issuer}, not {metadata.issuer}; "
                "they are not sent to another authorization server")
        return self.issuer


@dataclass
class ClientCredentialsGrant:
    """OAuth client_credentials for a machine client (SEP-1046)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    auth_method: str = "client_secret_basic"
    private_key_pem: str | None = field(default=None, repr=False)
    signing_alg: str = "ES256"
    issuer: str | None = None
    refreshable = False

    def __post_init__(self) -> None:
        self._pin = _IssuerPin(self.issuer)
        if self.auth_method not in ("client_secret_basic", "client_secret_post",
                                    "private_key_jwt"):
            raise ValueError("auth_method must be client_secret_basic, client_secret_post or "
                             "private_key_jwt")
        if self.auth_method == "private_key_jwt" and not self.private_key_pem:
            raise ValueError("private_key_jwt needs private_key_pem")
        if self.auth_method != "private_key_jwt" and not self.client_secret:
            raise ValueError(f"{self.auth_method} needs client_secret")

    async def obtain(self, ctx: GrantContext, scopes: tuple[str, ...] | None) -> TokenSet:
        client = ClientCredentials(
            issuer=self._pin.check(ctx.metadata), client_id=self.client_id,
            client_secret=self.client_secret, auth_method=self.auth_method,  # type: ignore[arg-type]
            private_key_pem=self.private_key_pem, signing_alg=self.signing_alg)
        return await ctx.token_request(client_credentials_form(ctx.resource, scopes), client,
                                       requested_scopes=scopes)


@dataclass
class JwtBearerGrant:
    """RFC 7523 §2.1 with a workload identity JWT (SEP-1933). Errors are surfaced, not
    retried with another grant type."""

    assertion: Callable[[], str]
    client_id: str | None = None
    issuer: str | None = None
    refreshable = False

    def __post_init__(self) -> None:
        self._pin = _IssuerPin(self.issuer)

    async def obtain(self, ctx: GrantContext, scopes: tuple[str, ...] | None) -> TokenSet:
        issuer = self._pin.check(ctx.metadata)
        form = jwt_bearer_form(self.assertion(), ctx.resource, scopes)
        if self.client_id is None:
            return await ctx.token_request(form, _anonymous(issuer), requested_scopes=scopes)
        client = ClientCredentials(issuer=issuer, client_id=self.client_id)
        return await ctx.token_request(form, client, requested_scopes=scopes)


@dataclass
class IdJagGrant:
    """Enterprise-managed authorization (SEP-990): the IdP's ID token is exchanged at the IdP
    for an ID-JAG (RFC 8693) naming this AS and resource, which the AS takes as a JWT bearer
    grant (RFC 7523) from the pre-registered client."""

    idp_token_endpoint: str
    id_token: Callable[[], str]
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    idp_client_id: str | None = None
    issuer: str | None = None
    refreshable = False

    def __post_init__(self) -> None:
        self._pin = _IssuerPin(self.issuer)

    async def obtain(self, ctx: GrantContext, scopes: tuple[str, ...] | None) -> TokenSet:
        issuer = self._pin.check(ctx.metadata)
        exchange = {
            "grant_type": TOKEN_EXCHANGE,
            "requested_token_type": ID_JAG_TYPE,
            "subject_token": self.id_token(),
            "subject_token_type": ID_TOKEN_TYPE,
            "audience": issuer,
            "resource": ctx.resource,
        }
        if scopes:
            exchange["scope"] = " ".join(scopes)
        idp_client = ClientCredentials(issuer="", client_id=self.idp_client_id or self.client_id)
        jag = await ctx.token_request(exchange, idp_client, requested_scopes=scopes,
                                      endpoint=self.idp_token_endpoint, any_token_type=True)
        client = ClientCredentials(
            issuer=issuer, client_id=self.client_id, client_secret=self.client_secret,
            auth_method="client_secret_basic" if self.client_secret else "none")
        return await ctx.token_request(jwt_bearer_form(jag.access_token, ctx.resource, scopes),
                                       client, requested_scopes=scopes)


def _anonymous(issuer: str) -> ClientCredentials:
    return replace(ClientCredentials(issuer=issuer, client_id=""), auth_method="none")

