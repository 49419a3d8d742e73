"""A hostile server cannot turn the client into an SSRF tool (BP-09..BP-13): every OAuth URL
goes through bastion.net's fetcher. The fetcher's network backend here is the test guard,
which records every connect and lets only loopback through."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bastion.client import (
    AuthorizationCodeGrant,
    DiscoveryError,
    HeadlessAuthorizer,
    McpOAuth,
    OAuthSession,
)
from bastion.net import FetchError, FetchPolicy, SafeFetcher
from tests.net.peers import (
    GuardedBackend,
    LoopbackServer,
    Request,
    ScriptedResolver,
    redirect_handler,
    respond,
)


def challenging(resource_metadata: str) -> LoopbackServer:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(writer, 401, b"", (
            ("WWW-Authenticate", f'Bearer resource_metadata="{resource_metadata}"'),))
    return LoopbackServer(handle)


async def attempt(server_url: str, fetcher: SafeFetcher) -> DiscoveryError:
    grant = AuthorizationCodeGrant(HeadlessAuthorizer(fetcher))
    auth = McpOAuth(OAuthSession(server_url, grant, fetcher=fetcher))
    async with httpx.AsyncClient(auth=auth) as http:
        with pytest.raises(DiscoveryError) as caught:
            await http.post(server_url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    return caught.value


HOSTILE = [
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://2130706433/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "https://10.0.0.1/prm",
    "https://100.64.0.1/prm",
    "https://[fd00::1]/prm",
    "https://[fe80::1]/prm",
    "https://0.0.0.0/prm",
    "https://224.0.0.1/prm",
    "https://metadata.attacker.example/prm",  # resolves to 169.254.169.254
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", HOSTILE)
@pytest.mark.parametrize("dev", [False, True])
async def test_hostile_resource_metadata_url_is_never_contacted(url: str, dev: bool) -> None:
    if dev and "::ffff:127.0.0.1" in url:
        pytest.skip("an IPv4-mapped loopback address is loopback, allowed by the dev policy")
    guard = GuardedBackend()
    resolver = ScriptedResolver({"metadata.attacker.example": [["169.254.169.254"]]})
    fetcher = SafeFetcher(FetchPolicy(allow_http_loopback=dev), resolver, network_backend=guard)
    server = await challenging(url).start()
    try:
        error = await attempt(server.url("/mcp"), fetcher)
    finally:
        await server.stop()
        await fetcher.aclose()
    cause = error.__cause__
    assert isinstance(cause, FetchError)
    assert cause.reason in ("blocked_address", "scheme", "invalid_url")
    assert guard.connects == []
    assert server.accepts == 1  # only the MCP request itself


@pytest.mark.parametrize("max_redirects", [0, 3])
async def test_redirect_to_a_private_address_is_not_followed(max_redirects: int) -> None:
    guard = GuardedBackend()
    fetcher = SafeFetcher(FetchPolicy(allow_http_loopback=True, max_redirects=max_redirects),
                          ScriptedResolver(), network_backend=guard)
    prm = await LoopbackServer(redirect_handler("http://10.0.0.1/prm")).start()
    server = await challenging(prm.url("/prm")).start()
    try:
        error = await attempt(server.url("/mcp"), fetcher)
    finally:
        await server.stop()
        await prm.stop()
        await fetcher.aclose()
    cause = error.__cause__
    assert isinstance(cause, FetchError)
    assert cause.reason == ("redirect" if max_redirects == 0 else "blocked_address")
    assert [host for host, _ in guard.connects] == ["127.0.0.1"]
