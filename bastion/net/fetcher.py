"""``SafeFetcher``: the one door out for URLs someone else supplied (DESIGN invariant 5).

Client ID Metadata Documents, authorization-server metadata, JWKS, protected-resource metadata
and token endpoints are all fetched here, so the SSRF rules exist in exactly one place.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import httpcore
import httpx

from bastion import jsonlimits
from bastion.net.policy import FetchError, FetchPolicy, parse_url
from bastion.net.resolver import Resolver
from bastion.net.transport import SafeTransport, transport_error

__all__ = ["FetchResult", "SafeFetcher", "parse_json_object"]

_SENSITIVE_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A complete, size-capped response. ``url`` is the final URL after any followed redirects."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    def json_object(self) -> dict[str, Any]:
        """The body as a strict JSON object (see ``parse_json_object``)."""
        return parse_json_object(self.body, httpx.URL(self.url).host)


class SafeFetcher:
    """Fetches under one ``FetchPolicy``; reuse one instance, it keeps a connection pool.

    ``resolver`` and ``network_backend`` are injectable for tests; ``ssl_context`` defaults to
    httpx's (certifi) trust store.
    """

    def __init__(
        self,
        policy: FetchPolicy | None = None,
        resolver: Resolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy or FetchPolicy()
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._network_backend = network_backend
        self._client = self.client()

    # --- for callers that need an httpx client ---------------------------------------------

    def transport(self) -> SafeTransport:
        """A new transport (own pool, caller closes it) applying this policy to every request."""
        return SafeTransport(
            self.policy,
            self._resolver,
            ssl_context=self._ssl_context,
            network_backend=self._network_backend,
        )

    def client(self) -> httpx.AsyncClient:
        """A new ``httpx.AsyncClient`` (caller closes it) that cannot leave through another door.

        ``trust_env=False`` keeps HTTP(S)_PROXY and friends out. Redirects are off by default;
        if a caller turns them on, each hop still goes through the transport's checks and at
        most ``policy.max_redirects`` are followed.
        """
        return httpx.AsyncClient(
            transport=self.transport(),
            trust_env=False,
            follow_redirects=False,
            max_redirects=self.policy.max_redirects,
            timeout=self.policy.timeout_seconds,
            headers={"User-Agent": self.policy.user_agent, "Accept-Encoding": "identity"},
        )

    # --- fetching -------------------------------------------------------------------------

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> FetchResult:
        """GET ``url``; any status is returned, a 2xx body must have an allowed content type."""
        return await self._fetch("GET", url, headers, None)

    async def get_json(self, url: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """GET a JSON object document: 2xx, allowed content type, strict JSON, an object."""
        result = await self.get(url, headers)
        if not 200 <= result.status < 300:
            host = httpx.URL(result.url).host
            raise FetchError("status", host, f"HTTP {result.status} where a document was expected")
        return result.json_object()

    async def post_form(
        self, url: str, data: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> FetchResult:
        """POST a form (e.g. to a token endpoint). Redirects are never followed for a POST:
        re-sending credentials or codes to wherever a server points is how they leak."""
        return await self._fetch("POST", url, headers, data)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _fetch(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        form: Mapping[str, str] | None,
    ) -> FetchResult:
        target = parse_url(url, self.policy)
        try:
            async with asyncio.timeout(self.policy.timeout_seconds):
                return await self._follow(method, target, dict(headers or {}), form)
        except TimeoutError:
            raise FetchError(
                "timeout",
                target.host,
                f"no complete response within {self.policy.timeout_seconds}s",
            ) from None

    async def _follow(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        form: Mapping[str, str] | None,
    ) -> FetchResult:
        hops = 0
        while True:
            request = self._client.build_request(method, url, headers=headers, data=form)
            response = await self._client.send(request, stream=True)
            try:
                if response.is_redirect:
                    next_url = self._redirect_target(method, url, response, hops)
                    if next_url.scheme != url.scheme or next_url.netloc != url.netloc:
                        headers = {
                            k: v for k, v in headers.items() if k.lower() not in _SENSITIVE_HEADERS
                        }
                    url, hops = next_url, hops + 1
                    continue
                try:
                    body = await response.aread()
                except httpx.TransportError as exc:
                    raise transport_error(exc, url.host, self.policy) from exc
            finally:
                await response.aclose()
            if 200 <= response.status_code < 300:
                self._check_content_type(response, url.host)
            return FetchResult(response.status_code, response.headers, body, str(url))

    def _redirect_target(
        self, method: str, url: httpx.URL, response: httpx.Response, hops: int
    ) -> httpx.URL:
        location = response.headers["Location"]
        if method != "GET" or self.policy.max_redirects == 0:
            raise FetchError("redirect", url.host, f"HTTP {response.status_code} redirect refused")
        if hops >= self.policy.max_redirects:
            raise FetchError(
                "redirect", url.host, f"more than {self.policy.max_redirects} redirects"
            )
        try:
            joined = url.join(location)
        except (httpx.InvalidURL, ValueError) as exc:
            raise FetchError("redirect", url.host, f"unusable Location: {exc}") from None
        return parse_url(joined, self.policy)

    def _check_content_type(self, response: httpx.Response, host: str) -> None:
        allowed = self.policy.allowed_content_types
        if not allowed:
            return
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type not in allowed:
            raise FetchError(
                "content_type",
                host,
                f"content type {media_type or 'missing'!r} is not one of {', '.join(allowed)}",
            )


def parse_json_object(body: bytes, host: str) -> dict[str, Any]:
    """Strict JSON (``bastion.jsonlimits``): UTF-8, no NaN/Infinity, no duplicate member names
    (two parsers may pick different values for them), nesting bounded, an object at the top."""
    try:
        value = jsonlimits.loads(body)
    except jsonlimits.InvalidJson as exc:
        raise FetchError("invalid_json", host, f"body is not strict JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FetchError(
            "invalid_json", host, f"JSON {type(value).__name__} where an object was expected"
        )
    return value
