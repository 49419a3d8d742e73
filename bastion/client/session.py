"""The session: discovery, the binding to one authorization server, tokens and step-up.

It holds the state the ``httpx.Auth`` driver must not: which AS this server uses (found again
on every 401, so a changed AS is noticed, CL-21), the tokens for (issuer, resource), and the
step-up budget. All its requests go through one ``SafeFetcher`` (BP-09..BP-13).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.client.challenge import Challenge
from bastion.client.discovery import (
    AuthorizationServerMetadata,
    ResourceMetadata,
    as_metadata_urls,
    choose_first,
    legacy_default_metadata,
    legacy_metadata_urls,
    prm_urls,
    validate_as_metadata,
    validate_prm,
)
from bastion.client.errors import DiscoveryError, TokenEndpointError
from bastion.client.grants import Grant, GrantContext
from bastion.client.registration import ClientProfile
from bastion.client.scope_choice import StepUpBudget, initial_scopes, step_up_scopes
from bastion.client.store import MemoryTokenStore, TokenStore
from bastion.client.token_requests import TokenSet
from bastion.clock import Clock, SystemClock
from bastion.net.fetcher import SafeFetcher
from bastion.net.policy import FetchError, FetchPolicy
from bastion.oauth.rfc8707 import canonical_resource

__all__ = ["Binding", "OAuthSession"]


@dataclass(frozen=True, slots=True)
class Binding:
    """The authorization server and resource identifier in use for this MCP server."""

    metadata: AuthorizationServerMetadata
    resource: str
    prm: ResourceMetadata | None

    @property
    def issuer(self) -> str:
        return self.metadata.issuer


class OAuthSession:
    """Everything the driver asks for, behind four calls (see ``McpOAuth``).

    Pass ``fetcher`` to share one (the caller closes it), or ``policy`` to have the session
    make its own (closed by ``aclose``).
    """

    def __init__(
        self,
        server_url: str,
        grant: Grant,
        *,
        fetcher: SafeFetcher | None = None,
        policy: FetchPolicy | None = None,
        store: TokenStore | None = None,
        profile: ClientProfile | None = None,
        clock: Clock | None = None,
        choose_authorization_server: Callable[[Sequence[str]], str] = choose_first,
        max_step_ups: int = 2,
        legacy_fallback: bool = True,
    ) -> None:
        canonical_resource(server_url)  # refuse a server URL that is no resource URI
        self.server_url = server_url
        self.grant = grant
        self._owns_fetcher = fetcher is None
        self.fetcher = fetcher or SafeFetcher(policy)
        self.store: TokenStore = store if store is not None else MemoryTokenStore()
        self.profile = profile or ClientProfile()
        self.clock = clock or SystemClock()
        self.choose_authorization_server = choose_authorization_server
        self.legacy_fallback = legacy_fallback
        self.budget = StepUpBudget(max_step_ups)
        self.binding: Binding | None = None
        self.tokens: TokenSet | None = None
        self._as_cache: dict[str, AuthorizationServerMetadata] = {}
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the fetcher's connection pool, if this session made the fetcher."""
        if self._owns_fetcher:
            await self.fetcher.aclose()

    # --- what the driver calls ---------------------------------------------------------

    def origin_matches(self, url: str) -> bool:
        """CL-33: tokens go only to this server's origin."""
        a, b = urlsplit(url), urlsplit(self.server_url)
        return (a.scheme.lower(), a.netloc.lower()) == (b.scheme.lower(), b.netloc.lower())

    async def current_token(self) -> TokenSet | None:
        """The token to send, refreshed first when it has expired."""
        tokens, binding = self.tokens, self.binding
        if tokens is None or binding is None or not tokens.expired(self.clock.now()):
            return tokens
        async with self._lock:
            if self.tokens is tokens:
                self.tokens = await self._renew(binding, tokens)
            return self.tokens

    async def handle_unauthorized(self, challenge: Challenge | None,
                                  rejected: TokenSet | None) -> TokenSet:
        """After a 401: discover again, then a stored token, a refresh, or a new grant."""
        async with self._lock:
            if self.tokens is not None and self.tokens is not rejected:
                return self.tokens  # another request already did this
            binding = await self.discover(challenge)
            self.binding = binding
            stored = self.store.load_tokens(binding.issuer, binding.resource)
            now = self.clock.now()
            unused = stored is not None and (
                rejected is None or stored.access_token != rejected.access_token)
            if stored is not None and unused and not stored.expired(now):
                self.tokens = stored
                return stored
            renewed = await self._renew(binding, stored) if stored is not None else None
            if renewed is not None:
                self.tokens = renewed
                return renewed
            scopes = initial_scopes(challenge, binding.prm)
            return await self._obtain(binding, scopes)

    async def step_up(self, challenge: Challenge, operation: str) -> TokenSet | None:
        """After a 403 ``insufficient_scope``: a new grant for the union of scopes (CL-12..14),
        or ``None`` when the budget for this operation is spent."""
        async with self._lock:
            binding = self.binding
            if binding is None or not self.budget.take(binding.resource, operation):
                return None
            previous = self.tokens.requested_scopes if self.tokens is not None else None
            return await self._obtain(binding, step_up_scopes(previous, challenge.scopes))

    def operation_succeeded(self, operation: str) -> None:
        if self.binding is not None:
            self.budget.succeeded(self.binding.resource, operation)

    # --- discovery -----------------------------------------------------------------------

    async def discover(self, challenge: Challenge | None) -> Binding:
        prm = await self._resource_metadata(challenge)
        if prm is None:
            if challenge is not None and challenge.resource_metadata:
                raise DiscoveryError("the resource_metadata URL in the challenge served no "
                                     "protected resource metadata")
            if not self.legacy_fallback:
                raise DiscoveryError("the server publishes no protected resource metadata")
            return await self._legacy_binding()
        issuer = self.choose_authorization_server(prm.authorization_servers)
        if issuer not in prm.authorization_servers:
            raise DiscoveryError("the chosen authorization server is not one the server names")
        return Binding(await self._as_metadata(issuer), prm.resource, prm)

    async def _resource_metadata(self, challenge: Challenge | None) -> ResourceMetadata | None:
        for url in prm_urls(self.server_url, challenge):
            doc = await self._get_document(url)
            if doc is not None:
                return validate_prm(doc, self.server_url)
        return None

    async def _as_metadata(self, issuer: str) -> AuthorizationServerMetadata:
        cached = self._as_cache.get(issuer)
        if cached is not None:
            return cached
        for url in as_metadata_urls(issuer):
            doc = await self._get_document(url)
            if doc is not None:
                metadata = validate_as_metadata(doc, issuer, self.fetcher.policy)
                self._as_cache[issuer] = metadata
                return metadata
        raise DiscoveryError(
            f"no authorization server metadata found for {urlsplit(issuer).netloc}")

    async def _legacy_binding(self) -> Binding:
        """CL-37: a 2025-03-26 server is its own AS; metadata at its origin, else defaults."""
        issuer, url = legacy_metadata_urls(self.server_url)
        doc = await self._get_document(url)
        policy = self.fetcher.policy
        metadata = (validate_as_metadata(doc, issuer, policy) if doc is not None
                    else legacy_default_metadata(self.server_url, policy))
        return Binding(metadata, canonical_resource(self.server_url), None)

    async def _get_document(self, url: str) -> dict[str, Any] | None:
        """A JSON object, or ``None`` when the URL does not serve one (try the next).
        A refused or failed fetch stops discovery: the next candidate is the same host."""
        try:
            result = await self.fetcher.get(url)
            if not 200 <= result.status < 300:
                return None
            return result.json_object()
        except FetchError as exc:
            raise DiscoveryError(f"metadata fetch refused or failed: {exc}") from exc

    # --- tokens ----------------------------------------------------------------------------

    def _context(self, binding: Binding) -> GrantContext:
        return GrantContext(binding.metadata, binding.resource, self.fetcher, self.store,
                            self.profile, self.clock)

    async def _obtain(self, binding: Binding, scopes: tuple[str, ...] | None) -> TokenSet:
        tokens = await self.grant.obtain(self._context(binding), scopes)
        self.store.save_tokens(binding.issuer, binding.resource, tokens)
        self.tokens = tokens
        return tokens

    async def _renew(self, binding: Binding, tokens: TokenSet) -> TokenSet | None:
        """A refreshed token set, or ``None`` (no refresh token, or the AS refused it)."""
        if not self.grant.refreshable or tokens.refresh_token is None:
            return None
        try:
            renewed = await self._context(binding).refresh(tokens)
        except TokenEndpointError:
            self.store.delete_tokens(binding.issuer, binding.resource)
            return None
        self.store.save_tokens(binding.issuer, binding.resource, renewed)
        return renewed
