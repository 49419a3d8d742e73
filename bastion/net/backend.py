"""The network backend that closes the DNS-rebinding window.

httpcore asks its backend to ``connect_tcp(host, port)``. This backend resolves ``host`` once,
checks every answer, and connects to the checked address itself. httpcore still uses the URL's
host name for TLS (SNI and certificate verification), so pinning the address costs nothing in
authentication.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore

from bastion.net.policy import FetchError
from bastion.net.resolver import Resolver, resolve_checked

__all__ = ["PinningBackend"]


class PinningBackend(httpcore.AsyncNetworkBackend):
    """Wraps a real backend; only ever connects to addresses that passed the check."""

    def __init__(
        self, inner: httpcore.AsyncNetworkBackend, resolver: Resolver, *, allow_loopback: bool
    ) -> None:
        self._inner = inner
        self._resolver = resolver
        self._allow_loopback = allow_loopback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(
            host, port, self._resolver, allow_loopback=self._allow_loopback
        )
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("invalid_url", path, "unix sockets are not reachable through the fetcher")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
