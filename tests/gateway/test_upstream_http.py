"""The gateway's own HTTP/1.1 upstream client: framing is parsed strictly (no response
smuggling), a stale pooled connection is retried once, and a misbehaving upstream gives an
UpstreamError, never an exception the gateway would turn into a 500."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bastion.gateway.upstream import UpstreamError
from bastion.gateway.upstream_http import HttpUpstream, _Malformed, _parse_head


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 1e3\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n name: folded\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 abc\r\n\r\n",
])
def test_ambiguous_or_malformed_framing_is_refused(head: bytes) -> None:
    with pytest.raises(_Malformed):
        _parse_head(head[:-4])


def test_framing_is_read() -> None:
    status, headers, length, chunked, close = _parse_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 7\r\n"
        b"Content-Length: 7\r\nconnection: close")
    assert (status, length, chunked, close) == (200, 7, False, True)
    assert ("content-type", "application/json") in headers


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in stream])


async def test_chunked_and_keep_alive_and_stale_connection_retry() -> None:
    served: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        length = 2  # the test posts "{}"
        await reader.readexactly(length)
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()  # the pooled connection goes stale

    server, port = await raw_server(handler)
    up = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=2,
                      read_timeout=2)
    try:
        for _ in range(3):
            r = await up.request("POST", {"content-type": "application/json"}, b"{}")
            assert (r.status, await read_all(r.stream)) == (200, b"abcde")
            await asyncio.sleep(0.05)
        assert len(served) == 3
    finally:
        await up.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX",
])
async def test_broken_bodies_are_upstream_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server, port = await raw_server(handler)
    up = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=2,
                      read_timeout=2)
    try:
        r = await up.request("GET", {}, None)
        with pytest.raises(UpstreamError):
            await read_all(r.stream)
    finally:
        await up.aclose()
        server.close()
        await server.wait_closed()


def test_credentials_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        HttpUpstream("http://127.0.0.1:9/mcp", credentials={"authorization": "a\r\nx: y"},
                     connect_timeout=1, read_timeout=1)
