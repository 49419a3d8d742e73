"""Streamable HTTP upstream: a small pooled HTTP/1.1 client on asyncio streams.

The gateway's hot path needs one thing from its upstream client: send a request, stream the
answer back. httpx did this at several times the upstream's own CPU cost per call (its
connection-pool bookkeeping grows with concurrency; docs/performance.md has the figures), so
the gateway speaks HTTP/1.1 itself: keep-alive connections in a LIFO pool, Content-Length or
chunked bodies, strict parsing of the status line and framing headers, no redirects, per-read
timeouts (none for a GET event stream). https upstreams use the system trust store.

The per-read timeout is kept by one ``_ReadClock`` per exchange rather than ``wait_for``
around each read: ``wait_for`` wraps every read in a task of its own (two or more per call;
the clock took the client from 99 to 80 µs of CPU per call at c=1, 35 to 24 at c=8). The
clock is one timer that is armed while a read waits and re-checks itself when it comes due;
a read that waits longer than the timeout aborts the connection, and the aborted read is
reported as a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

from bastion.gateway.upstream import (
    ANONYMOUS,
    Caller,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)

__all__ = ["HttpUpstream"]

T = TypeVar("T")

MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 1024
PIECE = 65536  # the most of a response body held at once
MAX_TRAILERS = 8192  # bytes of trailer section after the last chunk (read and dropped)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # RFC 9112 chunk-size: 1*HEXDIG, nothing else
_NO_BODY = frozenset({204, 304})
# how a read on the upstream connection fails (an abort by the read clock included)
_READ_FAILED = (asyncio.IncompleteReadError, OSError, asyncio.LimitOverrunError)


class _Conn:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.reused = False

    @property
    def reusable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class _Malformed(Exception):
    pass


class _ReadClock:
    """The per-read timeout of one exchange: a read may wait at most ``timeout`` seconds.

    ``waiting()`` before each read, ``idle()`` after it: only time spent waiting for the
    upstream counts, never time the caller spends between reads (passing a piece on to a slow
    client). One timer per exchange: when it comes due it looks at the current read's
    deadline and either sleeps until then or, if the read is overdue, aborts the connection
    (the read then ends with EOF or a reset, which the caller reports as ``expired``)."""

    __slots__ = ("_conn", "_deadline", "_handle", "_loop", "_timeout", "expired")

    def __init__(self, conn: _Conn, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._conn, self._timeout = conn, timeout
        self._deadline: float | None = None
        self.expired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._loop.time() + timeout, self._due)

    def waiting(self) -> None:
        self._deadline = self._loop.time() + self._timeout

    def idle(self) -> None:
        self._deadline = None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _due(self) -> None:
        now = self._loop.time()
        if self._deadline is None or now < self._deadline:
            self._handle = self._loop.call_at(
                self._deadline if self._deadline is not None else now + self._timeout,
                self._due)
            return
        self._handle = None
        self.expired = True
        self._conn.writer.transport.abort()


class _NoClock:
    """No timeout (a GET event stream may stay quiet for as long as it likes)."""

    __slots__ = ()
    expired = False

    def waiting(self) -> None:
        pass

    def idle(self) -> None:
        pass

    def stop(self) -> None:
        pass


_NO_CLOCK = _NoClock()


class _Exchange:
    """One request's connection and its read clock (none when ``timeout`` is None), until the
    body is read or the exchange is given up.

    A response whose body is never iterated (the proxy refuses an upstream 401, say) never
    runs the body's ``finally``; closing the response reaches this closer instead, which stops
    the clock and closes the connection (its unread body makes it unfit for the pool)."""

    __slots__ = ("clock", "conn", "settled")

    def __init__(self, conn: _Conn, timeout: float | None) -> None:
        self.conn = conn
        self.clock: _ReadClock | _NoClock = (
            _ReadClock(conn, timeout) if timeout is not None else _NO_CLOCK)
        self.settled = False

    def abandon(self) -> None:
        """Stop the clock and close the connection (once; the body's end may have already)."""
        if not self.settled:
            self.settled = True
            self.clock.stop()
            self.conn.close()

    async def aclose(self) -> None:
        self.abandon()


def _cause(exc: BaseException) -> str:
    """What went wrong, for the log: the OS's words (connection refused, no route...)."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _parse_head(raw: bytes) -> tuple[int, list[tuple[str, str]], int | None, bool, bool]:
    """(status, headers, content length, chunked, connection close); strict framing."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 \
            or not (parts[1].isascii() and parts[1].isdigit()):
        raise _Malformed("status line")
    status = int(parts[1])
    headers: list[tuple[str, str]] = []
    lengths: set[str] = set()
    chunked = close = False
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or name != name.strip() or not name:
            raise _Malformed("header line")
        name, value = name.lower(), value.strip()
        if name == "content-length":
            lengths.add(value)
        elif name == "transfer-encoding":
            if value.lower() != "chunked":
                raise _Malformed("transfer-encoding")
            chunked = True
        elif name == "connection":
            close = "close" in value.lower()
        headers.append((name, value))
    length: int | None = None
    if lengths:
        # One value (repeats must agree), never with chunked: no response smuggling.
        declared = next(iter(lengths))
        if len(lengths) != 1 or chunked or not (declared.isascii() and declared.isdigit()):
            raise _Malformed("content-length")
        length = int(declared)
    return status, headers, length, chunked, close


class HttpUpstream:
    def __init__(
        self,
        url: str,
        *,
        credentials: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 64,
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("the upstream must be an http(s) URL with a host")
        self.url = url
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if u.scheme == "https" else None
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        authority = f"{self.host}:{u.port}" if u.port else self.host
        if ":" in self.host and not authority.startswith("["):
            authority = f"[{self.host}]" + (f":{u.port}" if u.port else "")
        fixed = {"host": authority, **{k.lower(): v for k, v in credentials.items()}}
        for k, v in fixed.items():
            if any(c in k + v for c in "\r\n\x00"):
                raise ValueError(f"upstream header {k} has a line break")
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                conn.reused = True
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=MAX_HEAD,
                server_hostname=self.host if self.tls else None), self.connect_timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream server did not accept in time") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"{self.host}:{self.port} cannot be reached: {_cause(exc)}"
                                ) from exc
        return _Conn(reader, writer)

    def _release(self, conn: _Conn) -> None:
        if conn.reusable and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def request(
        self, method: str, headers: Mapping[str, str], body: bytes | None,
        caller: Caller = ANONYMOUS,
    ) -> UpstreamResponse:
        head = [f"{method} {self.path} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        head.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        payload = body or b""
        if payload or method == "POST":
            head.append(b"content-length: %d\r\n" % len(payload))
        head.append(b"\r\n")
        message = b"".join(head) + payload
        read_timeout = None if method == "GET" else self.read_timeout
        for attempt in (1, 2):
            conn = await self._connect()
            exchange = _Exchange(conn, read_timeout)
            try:
                conn.writer.write(message)
                raw = await _read(exchange.clock, conn.reader.readuntil(b"\r\n\r\n"))
                break
            except BaseException as exc:
                exchange.abandon()
                if not isinstance(exc, _READ_FAILED):
                    raise  # cancelled, or not the connection's doing
                if exchange.clock.expired:  # the clock aborted the read
                    raise UpstreamTimeout("the upstream server did not answer in time") from exc
                if isinstance(exc, asyncio.IncompleteReadError):
                    # A pooled connection the upstream had closed: nothing was read, so the
                    # request was not processed; try once more on a fresh connection.
                    if conn.reused and not exc.partial and attempt == 1:
                        continue
                    raise UpstreamError("the upstream server closed the connection") from exc
                raise UpstreamError(f"the upstream server cannot be reached: {_cause(exc)}"
                                    ) from exc
        try:
            status, out, length, chunked, close = _parse_head(raw)
        except (_Malformed, ValueError) as exc:
            exchange.abandon()
            raise UpstreamError(f"the upstream server sent a malformed answer: {exc}") from exc
        if status in _NO_BODY or method == "HEAD" or 100 <= status < 200:
            length, chunked = 0, False
        return UpstreamResponse(status, out, self._body(exchange, length, chunked, close),
                                closers=[exchange])

    async def _body(self, exchange: _Exchange, length: int | None, chunked: bool,
                    close: bool) -> AsyncIterator[bytes]:
        conn, clock = exchange.conn, exchange.clock
        reader = conn.reader
        done = False
        try:
            if chunked:
                while True:
                    line = await _read(clock, reader.readuntil(b"\r\n"))
                    if len(line) > MAX_CHUNK_LINE:
                        raise ValueError("chunk size line too long")
                    # chunk-size [BWS ";" extensions]: hex digits only (int() alone would also
                    # take "0x", "+", "-", "_" and spaces: framing two parsers could disagree on)
                    size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")
                    if not _CHUNK_SIZE.fullmatch(size_text):
                        raise ValueError("malformed chunk size")
                    size = int(size_text, 16)
                    if size == 0:
                        trailers = 0
                        while (trailer := await _read(
                                clock, reader.readuntil(b"\r\n"))) != b"\r\n":
                            trailers += len(trailer)  # dropped, but not without end
                            if trailers > MAX_TRAILERS:
                                raise ValueError("trailer section too long")
                        break
                    # a chunk may claim any size: it is passed on in pieces
                    async for piece in _pieces(reader, size, clock):
                        yield piece
                    if await _read(clock, reader.readexactly(2)) != b"\r\n":
                        raise ValueError("chunk not terminated")
            elif length is not None:
                async for piece in _pieces(reader, length, clock):
                    yield piece
            else:
                close = True  # read to end of connection
                while chunk := await _read(clock, reader.read(PIECE)):
                    yield chunk
                if clock.expired:  # the end was the clock's abort, not the upstream's
                    raise TimeoutError
            done = True
        except (*_READ_FAILED, ValueError) as exc:
            if clock.expired or isinstance(exc, TimeoutError):
                raise UpstreamTimeout("the upstream server stopped answering") from exc
            raise UpstreamError(f"the upstream connection broke: {_cause(exc)}") from exc
        finally:
            exchange.settled = True
            clock.stop()
            if done and not close:
                self._release(conn)
            else:
                with contextlib.suppress(Exception):
                    conn.close()


async def _read(clock: _ReadClock | _NoClock, read: Awaitable[T]) -> T:
    """One read under the exchange's clock (only the wait counts, see ``_ReadClock``)."""
    clock.waiting()
    try:
        return await read
    finally:
        clock.idle()


async def _pieces(reader: asyncio.StreamReader, count: int,
                  clock: _ReadClock | _NoClock) -> AsyncIterator[bytes]:
    """The next ``count`` bytes as they arrive, at most ``PIECE`` at a time (so memory holds
    one piece, whatever the upstream announced); IncompleteReadError if the stream ends first."""
    while count:
        piece = await _read(clock, reader.read(min(count, PIECE)))
        if not piece:
            raise asyncio.IncompleteReadError(b"", count)
        count -= len(piece)
        yield piece
