"""The gateway's own HTTP/1.1 upstream client: framing is parsed strictly (no response
smuggling), a stale pooled connection is retried once, and a misbehaving upstream gives an
UpstreamError, never an exception the gateway would turn into a 500."""

from __future__ import annotations

import asyncio
import contextlib
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
    b"HTTP/1.1 2000 OK\r\n\r\n",
    "HTTP/1.1 200 OK\r\ncontent-length: \u00b2\r\n\r\n".encode("latin-1"),  # isdigit()
    b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
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


@contextlib.asynccontextmanager
async def upstream_behind(handler: Handler) -> AsyncIterator[HttpUpstream]:
    """An HttpUpstream pointed at a raw server answering with ``handler``; both closed after."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    up = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=2,
                      read_timeout=2)
    try:
        yield up
    finally:
        await up.aclose()
        server.close()
        await server.wait_closed()


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

    async with upstream_behind(handler) as up:
        for _ in range(3):
            r = await up.request("POST", {"content-type": "application/json"}, b"{}")
            assert (r.status, await read_all(r.stream)) == (200, b"abcde")
            await asyncio.sleep(0.05)
        assert len(served) == 3


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX",
    # chunk sizes int(..., 16) would take but RFC 9112's 1*HEXDIG does not
    *(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n0\r\n\r\n"
      for size in (b"0x3", b"+3", b"-3", b"0_3", b" 3", b"3\x0b", b"", b"1" * 17)),
    # a trailer section past the bound (12 KB, ended properly)
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n" + b"x: y\r\n" * 2000 + b"\r\n",
])
async def test_broken_bodies_are_upstream_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with upstream_behind(handler) as up:
        r = await up.request("GET", {}, None)
        with pytest.raises(UpstreamError):
            await read_all(r.stream)


def test_credentials_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        HttpUpstream("http://127.0.0.1:9/mcp", credentials={"authorization": "a\r\nx: y"},
                     connect_timeout=1, read_timeout=1)


async def test_chunk_sizes_with_extensions_and_huge_chunks_stream() -> None:
    """chunk-size, BWS and extensions are read; a chunk's data is passed on in pieces as it
    arrives, not gathered whole, so a chunk claiming gigabytes cannot fill memory."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"3 ;ext=1\r\nabc\r\nA\r\n0123456789\r\nFFFFFFFF\r\n" + b"z" * 200_000)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    async with upstream_behind(handler) as up:
        r = await up.request("GET", {}, None)

        async def collect() -> None:
            async for piece in r.stream:
                seen.append(piece)

        with pytest.raises(UpstreamError):
            await collect()
    assert seen[:2] == [b"abc", b"0123456789"]
    assert sum(len(p) for p in seen[2:]) == 200_000
    assert max(len(p) for p in seen) <= 65536
