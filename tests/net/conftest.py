from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from bastion.net import FetchPolicy, SafeFetcher

from .peers import GuardedBackend, Handler, LoopbackServer, ScriptedResolver

ServerFactory = Callable[..., Awaitable[LoopbackServer]]
FetcherFactory = Callable[..., SafeFetcher]


@pytest.fixture
def guard() -> GuardedBackend:
    return GuardedBackend()


@pytest.fixture
def resolver() -> ScriptedResolver:
    return ScriptedResolver()


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    servers: list[LoopbackServer] = []

    async def start(
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> LoopbackServer:
        server = await LoopbackServer(handler, host, port, ssl_context).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_fetcher(
    guard: GuardedBackend, resolver: ScriptedResolver
) -> AsyncIterator[FetcherFactory]:
    """Fetchers that can only ever reach loopback (``guard``) and use the scripted resolver."""
    fetchers: list[SafeFetcher] = []

    def make(policy: FetchPolicy | None = None, **kwargs: object) -> SafeFetcher:
        kwargs.setdefault("resolver", resolver)
        fetcher = SafeFetcher(policy or FetchPolicy(), network_backend=guard, **kwargs)  # type: ignore[arg-type]
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        await fetcher.aclose()


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """The fetcher's tests (here, TLS included) run on both event loops ``bastion serve`` may
    run on: uvloop resolves names and opens sockets with its own code (libuv), and invariant 5
    must hold there too."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
