"""Bastion's MCP OAuth client: spec-exact discovery, registration and authorization, SSRF-safe.

Quick start (a person at a browser, tokens encrypted at rest)::

    auth = oauth_for("https://mcp.example.com/mcp",
                     store=EncryptedFileTokenStore("~/.config/bastion/tokens"))
    async with httpx.AsyncClient(auth=auth) as http: ...

For the official SDK's transport, wrap it: ``Httpx2McpOAuth(auth)``.

Layers, low to high: pure steps (``challenge``, ``discovery``, ``scope_choice``,
``registration``, ``authorization``, ``token_requests``), I/O with one SSRF-safe fetcher
(``grants``, ``authorizers``, ``store``), the ``session`` that holds state, and the ``auth``
driver (an ``httpx.Auth``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bastion.client.auth import McpOAuth, operation_of
from bastion.client.authorizers import Authorizer, HeadlessAuthorizer, LoopbackBrowserAuthorizer
from bastion.client.challenge import Challenge, parse_challenge
from bastion.client.discovery import AuthorizationServerMetadata, ResourceMetadata, choose_first
from bastion.client.errors import (
    AuthorizationResponseError,
    ClientAuthError,
    DiscoveryError,
    MetadataError,
    RegistrationError,
    TokenEndpointError,
    UnsafeAuthorizationUrl,
)
from bastion.client.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    Grant,
    GrantContext,
    IdJagGrant,
    JwtBearerGrant,
)
from bastion.client.httpx2_adapter import Httpx2McpOAuth
from bastion.client.registration import ClientCredentials, ClientProfile
from bastion.client.session import OAuthSession
from bastion.client.store import (
    EncryptedFileTokenStore,
    KeyFile,
    MemoryTokenStore,
    TokenStore,
)
from bastion.client.token_requests import TokenSet
from bastion.clock import Clock
from bastion.net.fetcher import SafeFetcher
from bastion.net.policy import FetchPolicy

__all__ = [
    "AuthorizationCodeGrant",
    "AuthorizationResponseError",
    "AuthorizationServerMetadata",
    "Authorizer",
    "Challenge",
    "ClientAuthError",
    "ClientCredentials",
    "ClientCredentialsGrant",
    "ClientProfile",
    "DiscoveryError",
    "EncryptedFileTokenStore",
    "FetchPolicy",
    "Grant",
    "GrantContext",
    "HeadlessAuthorizer",
    "Httpx2McpOAuth",
    "IdJagGrant",
    "JwtBearerGrant",
    "KeyFile",
    "LoopbackBrowserAuthorizer",
    "McpOAuth",
    "MemoryTokenStore",
    "MetadataError",
    "OAuthSession",
    "RegistrationError",
    "ResourceMetadata",
    "TokenEndpointError",
    "TokenSet",
    "TokenStore",
    "UnsafeAuthorizationUrl",
    "oauth_for",
    "operation_of",
    "parse_challenge",
]


def oauth_for(
    server_url: str,
    *,
    grant: Grant | None = None,
    authorizer: Authorizer | None = None,
    store: TokenStore | str | Path | None = None,
    profile: ClientProfile | None = None,
    fetcher: SafeFetcher | None = None,
    policy: FetchPolicy | None = None,
    clock: Clock | None = None,
    choose_authorization_server: Callable[[Sequence[str]], str] = choose_first,
    max_step_ups: int = 2,
    legacy_fallback: bool = True,
) -> McpOAuth:
    """An ``McpOAuth`` for one MCP server.

    Defaults: the authorization-code grant in the system browser with a loopback redirect;
    tokens in memory (pass a path for the encrypted file store); the secure fetch policy
    (https only; pass ``FetchPolicy(allow_http_loopback=True)`` for local development).
    """
    policy_in_use = fetcher.policy if fetcher is not None else policy or FetchPolicy()
    if grant is None:
        grant = AuthorizationCodeGrant(authorizer or LoopbackBrowserAuthorizer(
            allow_http_loopback=policy_in_use.allow_http_loopback))
    if isinstance(store, str | Path):
        store = EncryptedFileTokenStore(Path(store).expanduser())
    session = OAuthSession(
        server_url, grant, fetcher=fetcher, policy=policy, store=store, profile=profile,
        clock=clock, choose_authorization_server=choose_authorization_server,
        max_step_ups=max_step_ups, legacy_fallback=legacy_fallback)
    return McpOAuth(session)
