"""The gateway's own HTTP/1.1 upstream client: framing is parsed strictly (no response
smuggling), a stale pooled connection is retried once, and a misbehaving upstream gives an
UpstreamError, never an exception the gateway would turn into a 500."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bastion.gateway.upstream import UpstreamError, UpstreamResponse, UpstreamTimeout
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
async def upstream_behind(handler: Handler,
                          read_timeout: float = 2) -> AsyncIterator[HttpUpstream]:
    """An HttpUpstream pointed at a raw server answering with ``handler``; both closed after."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    up = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=2,
                      read_timeout=read_timeout)
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



# --- the per-read timeout (POST: a GET event stream has none) -------------------------------

TIMEOUT = 0.3


async def post(up: HttpUpstream) -> UpstreamResponse:
    return await up.request("POST", {"content-type": "application/json"}, b"{}")


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabc",
    # no length: the body runs to the end of the connection, and a stall must not pass for
    # that end (a truncated answer taken as whole)
    b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabc",
], ids=["content-length", "between-chunks", "inside-a-chunk", "to-eof"])
async def test_a_body_that_stalls_is_a_timeout(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read(1)  # and then nothing, until the client gives up
        writer.close()

    async with upstream_behind(handler, read_timeout=TIMEOUT) as up:
        loop = asyncio.get_running_loop()
        r = await post(up)
        started = loop.time()
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(read_all(r.stream), 10)
        assert TIMEOUT * 0.9 <= loop.time() - started < TIMEOUT * 5


async def test_a_pooled_connection_that_times_out_is_not_retried() -> None:
    """The clock ends a stalled read by aborting the connection; that must be reported as a
    timeout, not taken for a stale pooled connection and sent again (the upstream may be
    processing the first copy)."""
    requests: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        requests.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)
        requests.append(2)
        await reader.read(1)  # the second request is never answered
        writer.close()

    async with upstream_behind(handler, read_timeout=TIMEOUT) as up:
        r = await post(up)
        assert await read_all(r.stream) == b"ok"
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(post(up), 10)
        await asyncio.sleep(0.1)
    assert requests == [1, 2]


async def test_time_spent_passing_the_body_on_is_not_upstream_time() -> None:
    """Only the wait for the upstream counts: a caller that takes longer than the timeout
    between two reads (a slow client downstream) does not make the upstream time out, and
    neither does an answer that takes longer than the timeout in all."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"one", b"two", b"three", b"four"):
            await asyncio.sleep(TIMEOUT / 2)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with upstream_behind(handler, read_timeout=TIMEOUT) as up:
        r = await post(up)
        got = []
        async for piece in r.stream:
            got.append(piece)
            await asyncio.sleep(TIMEOUT * 2)
    assert got == [b"one", b"two", b"three", b"four"]


async def test_a_body_never_read_closes_its_connection_and_stops_its_clock() -> None:
    ended = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!")
        await writer.drain()
        if await reader.read(1) == b"":
            ended.set()
        writer.close()

    async with upstream_behind(handler, read_timeout=TIMEOUT) as up:
        r = await post(up)
        await r.aclose()  # as the proxy does when it refuses an upstream 401
        await asyncio.wait_for(ended.wait(), 5)
        exchange = r.closers[0]
        assert exchange.clock._handle is None  # type: ignore[attr-defined]
        assert up._idle == []
