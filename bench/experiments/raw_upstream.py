"""PROTOTYPE (bench only): a raw pooled asyncio HTTP/1.1 upstream client with the interface of
``bastion.gateway.upstream_http.HttpUpstream``, to measure what replacing httpx would gain.

``bench/servers.py bastion --experiment raw-upstream`` swaps it in (``bastion.runtime`` is
patched before the runtime is built); nothing in ``bastion/`` changes. Not reviewed for
production: no TLS, no proxy, no redirects (the gateway follows none anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from bastion.gateway.upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

__all__ = ["RawHttpUpstream"]

MAX_HEAD = 64 * 1024
_NO_BODY = frozenset({204, 304})


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def reusable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class RawHttpUpstream:
    def __init__(self, url: str, *, credentials: Mapping[str, str], connect_timeout: float,
                 read_timeout: float, max_idle: int = 64) -> None:
        u = urlsplit(url)
        if u.scheme != "http":
            raise ValueError("prototype: http:// upstreams only")
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.url = url
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_idle = max_idle
        self._idle: list[_Conn] = []
        host = f"{self.host}:{self.port}" if u.port else self.host
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in
                              {"host": host, **credentials}.items()).encode("latin-1")

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _connect(self) -> _Conn:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable:
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_HEAD),
                self.connect_timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream server did not accept in time") from exc
        except OSError as exc:
            raise UpstreamError("the upstream server cannot be reached") from exc
        return _Conn(reader, writer)

    def _release(self, conn: _Conn) -> None:
        if conn.reusable and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def request(self, method: str, headers: Mapping[str, str],
                      body: bytes | None) -> UpstreamResponse:
        conn = await self._connect()
        head = [f"{method} {self.path} HTTP/1.1\r\n".encode("latin-1"), self._fixed]
        head.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        payload = body or b""
        if payload or method == "POST":
            head.append(b"content-length: %d\r\n" % len(payload))
        head.append(b"\r\n")
        read_timeout = None if method == "GET" else self.read_timeout
        try:
            conn.writer.write(b"".join(head) + payload)
            raw = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), read_timeout)
        except TimeoutError as exc:
            conn.close()
            raise UpstreamTimeout("the upstream server did not answer in time") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            conn.close()
            raise UpstreamError("the upstream server cannot be reached") from exc
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            conn.close()
            raise UpstreamError("the upstream server sent a malformed answer") from exc
        out: list[tuple[str, str]] = []
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            k, v = k.strip().lower(), v.strip()
            if k == "content-length":
                length = int(v)
            elif k == "transfer-encoding":
                chunked = v.lower() == "chunked"
            elif k == "connection":
                close = v.lower() == "close"
            out.append((k, v))
        if status in _NO_BODY or method == "HEAD":
            length, chunked = 0, False
        return UpstreamResponse(status, out, self._body(conn, length, chunked, close,
                                                       read_timeout))

    async def _body(self, conn: _Conn, length: int | None, chunked: bool, close: bool,
                    timeout: float | None) -> AsyncIterator[bytes]:
        reader = conn.reader
        done = False
        try:
            if chunked:
                while True:
                    size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
                    size = int(size_line.split(b";", 1)[0], 16)
                    if size == 0:
                        await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
                        break
                    data = await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                    yield data[:-2]
            elif length is not None:
                if length:
                    yield await asyncio.wait_for(reader.readexactly(length), timeout)
            else:
                close = True
                while chunk := await asyncio.wait_for(reader.read(65536), timeout):
                    yield chunk
            done = True
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream server stopped answering") from exc
        except (OSError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as exc:
            raise UpstreamError("the upstream connection broke") from exc
        finally:
            if done and not close:
                self._release(conn)
            else:
                with contextlib.suppress(Exception):
                    conn.close()
