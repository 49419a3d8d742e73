"""Access-token verification at the gateway: JWT (RFC 9068) against JWKS, or introspection.

Verified tokens are cached per (token, resource) until they expire, so a signature is checked
once per token rather than once per request. Expiry is re-checked on every hit, and a
revocation hook is consulted on every hit, so caching weakens neither.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from joserfc.jwk import KeySet

from bastion.clock import Clock
from bastion.errors import BastionError, InvalidToken, TemporarilyUnavailable
from bastion.oauth.rfc7519 import unverified_claim
from bastion.oauth.rfc8707 import same_resource
from bastion.oauth.rfc9068 import check_claims, read_unverified_header, verify_access_token
from bastion.principal import Principal

__all__ = [
    "IntrospectionClient",
    "IssuerVerifier",
    "KeySource",
    "StaticKeySource",
    "TokenVerifier",
]

LEEWAY_SECONDS = 30.0
MIN_REFRESH_INTERVAL = 30.0
INTROSPECTION_CACHE_SECONDS = 60.0


class KeySource(Protocol):
    async def key_set(self) -> KeySet: ...

    async def refresh(self) -> KeySet:
        """Fetch again (the caller bounds how often)."""
        ...


class StaticKeySource:
    """Keys known in-process (the built-in AS); ``reload`` re-reads them, e.g. after rotation."""

    def __init__(self, load: Callable[[], KeySet]) -> None:
        self._load = load
        self._keys = load()

    async def key_set(self) -> KeySet:
        return self._keys

    async def refresh(self) -> KeySet:
        self._keys = await asyncio.to_thread(self._load)
        return self._keys


class IntrospectionClient(Protocol):
    async def introspect(self, token: str) -> Mapping[str, Any]: ...


@dataclass
class IssuerVerifier:
    issuer: str
    algorithms: Collection[str]
    keys: KeySource | None = None
    introspection: IntrospectionClient | None = None
    require_at_jwt_typ: bool = True
    _last_refresh: float = 0.0

    async def verify(self, token: str, audience: str, now: float) -> Principal:
        if token.count(".") == 2 and self.keys is not None:
            return await self._verify_jwt(token, audience, now)
        if self.introspection is not None:
            return await self._introspect(token, audience, now)
        raise InvalidToken("the access token is not a well-formed JWT")

    async def _verify_jwt(self, token: str, audience: str, now: float) -> Principal:
        assert self.keys is not None
        try:
            keys = await self.keys.key_set()
        except BastionError as exc:
            # Fail closed (invariant 4): no keys, no verification, no entry.
            raise TemporarilyUnavailable("the issuer's keys cannot be fetched") from exc
        kid = read_unverified_header(token).get("kid")
        if isinstance(kid, str) and not _has_kid(keys, kid):
            # Unknown kid: maybe a rotation. Refetch, but at a bounded rate.
            mono = time.monotonic()
            if mono - self._last_refresh >= MIN_REFRESH_INTERVAL:
                self._last_refresh = mono
                try:
                    keys = await self.keys.refresh()
                except BastionError as exc:
                    raise TemporarilyUnavailable("the issuer's keys cannot be fetched") from exc
            if not _has_kid(keys, kid):
                raise InvalidToken("the access token is signed by an unknown key")
        return verify_access_token(
            token, keys, issuer=self.issuer, audience=audience, algorithms=self.algorithms,
            now=now, leeway=LEEWAY_SECONDS, require_at_jwt_typ=self.require_at_jwt_typ,
        )

    async def _introspect(self, token: str, audience: str, now: float) -> Principal:
        assert self.introspection is not None
        try:
            data = await self.introspection.introspect(token)
        except BastionError as exc:
            raise TemporarilyUnavailable("the token introspection endpoint failed") from exc
        if data.get("active") is not True:
            raise InvalidToken("the access token is not active")
        claims = dict(data)
        claims.setdefault("iss", self.issuer)
        return check_claims(claims, {}, issuer=self.issuer, audience=audience, now=now,
                            leeway=LEEWAY_SECONDS, require_at_jwt_typ=False)


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


RevocationCheck = Callable[[Principal], Awaitable[bool]]


class TokenVerifier:
    def __init__(
        self,
        issuers: Mapping[str, IssuerVerifier],
        clock: Clock,
        *,
        is_revoked: RevocationCheck | None = None,
        cache_size: int = 10_000,
    ) -> None:
        self.issuers = dict(issuers)
        self.clock = clock
        self.is_revoked = is_revoked
        self.cache_size = cache_size
        # (token, resource) -> (principal, re-verify after); memory only, never logged.
        self._cache: OrderedDict[tuple[str, str], tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str, *, audience: str, issuers: Collection[str]) -> Principal:
        now = self.clock.now()
        key = (token, audience)
        hit = self._cache.get(key)
        if hit is not None and now <= hit[1] and hit[0].issuer in issuers:
            principal = hit[0]
        else:
            self._cache.pop(key, None)
            principal, until = await self._verify_uncached(token, audience, issuers, now)
            self._cache[key] = (principal, until)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        if self.is_revoked is not None and await self.is_revoked(principal):
            self._cache.pop(key, None)
            raise InvalidToken("the access token has been revoked")
        return principal

    async def _verify_uncached(
        self, token: str, audience: str, issuers: Collection[str], now: float
    ) -> tuple[Principal, float]:
        until: float
        if token.count(".") == 2:
            iss = unverified_claim(token, "iss")
            if iss is None:
                raise InvalidToken("the access token is not a well-formed JWT")
            if iss not in issuers or iss not in self.issuers:
                raise InvalidToken("the access token was issued by an issuer this resource "
                                   "does not trust")
            principal = await self.issuers[iss].verify(token, audience, now)
            until = principal.expires_at + LEEWAY_SECONDS
        else:
            principal = await self._verify_opaque(token, audience, issuers, now)
            # An introspected token is cached only briefly: revocation at the AS must show.
            until = min(principal.expires_at, now + INTROSPECTION_CACHE_SECONDS)
        if not any(same_resource(a, audience) for a in principal.audience):
            raise InvalidToken("the access token was not issued for this resource")
        return principal, until

    async def _verify_opaque(
        self, token: str, audience: str, issuers: Collection[str], now: float
    ) -> Principal:
        candidates = [self.issuers[i] for i in issuers
                      if i in self.issuers and self.issuers[i].introspection is not None]
        if not candidates:
            raise InvalidToken("the access token is not a well-formed JWT")
        last: BastionError = InvalidToken("the access token is not active")
        for verifier in candidates:
            try:
                p = await verifier.verify(token, audience, now)
            except InvalidToken as exc:
                last = exc
                continue
            return p
        raise last
