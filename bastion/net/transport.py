"""An httpx transport that applies the fetch policy to every request sent through it.

This is what the client library mounts for all of its OAuth URL fetches, and what
``SafeFetcher`` itself uses: the URL check, the pinned connection, the total time limit and the
body cap all live below httpx's client, so no caller can forget them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import httpcore
import httpx

from bastion.net.backend import PinningBackend
from bastion.net.policy import FetchError, FetchPolicy, check_url
from bastion.net.resolver import Resolver, resolve_checked, system_resolver

__all__ = ["SafeTransport"]


class SafeTransport(httpx.AsyncBaseTransport):
    """Checks each request's URL, connects only to checked addresses and caps each response.

    Redirects are never followed here (a transport sees one request at a time); a client that
    follows them sends each hop back through this transport, so every hop is checked again.
    Environment proxy settings are ignored; only ``policy.egress_proxy`` is used.
    """

    def __init__(
        self,
        policy: FetchPolicy,
        resolver: Resolver | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver: Resolver = resolver or system_resolver
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        backend = network_backend or httpcore.AnyIOBackend()
        self._inner = httpx.AsyncHTTPTransport(verify=context, trust_env=False)
        # httpx has no public hook for the network backend, so the pool is built here with the
        # same settings httpx uses and put in place of the one it made (httpx is pinned <0.29).
        self._inner._pool = (
            _direct_pool(
                context,
                PinningBackend(backend, self._resolver, allow_loopback=policy.allow_http_loopback),
            )
            if policy.egress_proxy is None
            else _proxy_pool(context, backend, policy.egress_proxy)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host or "?"
        check_url(url, self.policy)
        if self.policy.egress_proxy is not None:
            # The proxy resolves again, so this cannot pin; it still refuses what we can see.
            await resolve_checked(
                url.raw_host.decode("ascii"),
                url.port or (443 if url.scheme == "https" else 80),
                self._resolver,
                allow_loopback=self.policy.allow_http_loopback,
            )
        # Compressed bodies would be inflated above the byte cap, after it was checked.
        request.headers["Accept-Encoding"] = "identity"
        deadline = asyncio.get_running_loop().time() + self.policy.timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._inner.handle_async_request(request)
        except TimeoutError:
            raise _timeout(host, self.policy) from None
        except httpx.TransportError as exc:
            raise transport_error(exc, host, self.policy) from exc
        try:
            _check_head(response, host, self.policy)
        except FetchError:
            await response.aclose()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_CappedStream(response.stream, host, self.policy, deadline),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def transport_error(exc: httpx.TransportError, host: str, policy: FetchPolicy) -> FetchError:
    """Translate httpx's transport errors into the fetcher's reasons."""
    if isinstance(exc, httpx.TimeoutException):
        return _timeout(host, policy)
    if isinstance(exc, httpx.ConnectError | httpx.ProxyError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLError):
                return FetchError("tls", host, f"TLS failed: {cause.reason or cause}")
            cause = cause.__cause__ or cause.__context__
        return FetchError("connect", host, f"cannot connect: {exc}")
    return FetchError("protocol", host, f"HTTP exchange failed: {type(exc).__name__}: {exc}")


def _timeout(host: str, policy: FetchPolicy) -> FetchError:
    return FetchError("timeout", host, f"no complete response within {policy.timeout_seconds}s")


def _check_head(response: httpx.Response, host: str, policy: FetchPolicy) -> None:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError("content_encoding", host, f"unrequested Content-Encoding {encoding!r}")
    length = response.headers.get("Content-Length", "").strip()
    if length.isascii() and length.isdigit() and int(length) > policy.max_bytes:
        raise FetchError("too_large", host, f"Content-Length {length} over {policy.max_bytes}")


class _CappedStream(httpx.AsyncByteStream):
    """The response body, cut off at the byte cap and at the request's deadline.

    A per-read timeout alone would let a server drip one byte a second forever.
    """

    def __init__(
        self, inner: httpx.AsyncByteStream, host: str, policy: FetchPolicy, deadline: float
    ) -> None:
        self._inner, self._host, self._policy, self._deadline = inner, host, policy, deadline

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        chunks = aiter(self._inner)
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _timeout(self._host, self._policy) from None
            except httpx.TransportError as exc:
                raise transport_error(exc, self._host, self._policy) from exc
            received += len(chunk)
            if received > self._policy.max_bytes:
                raise FetchError(
                    "too_large", self._host, f"body over {self._policy.max_bytes} bytes"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _direct_pool(
    context: ssl.SSLContext, backend: httpcore.AsyncNetworkBackend
) -> httpcore.AsyncConnectionPool:
    return httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        http1=True,
        http2=False,
        network_backend=backend,
    )


def _proxy_pool(
    context: ssl.SSLContext, backend: httpcore.AsyncNetworkBackend, proxy_url: str
) -> httpcore.AsyncHTTPProxy:
    proxy = httpx.Proxy(proxy_url)
    return httpcore.AsyncHTTPProxy(
        proxy_url=httpcore.URL(
            scheme=proxy.url.raw_scheme,
            host=proxy.url.raw_host,
            port=proxy.url.port,
            target=proxy.url.raw_path,
        ),
        proxy_auth=proxy.raw_auth,
        proxy_headers=proxy.headers.raw,
        ssl_context=context,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        http1=True,
        http2=False,
        network_backend=backend,
    )
