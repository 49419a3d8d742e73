"""Real peers on loopback for the fetcher tests, and the spies that prove what was (not) sent.

This machine may only send traffic to 127.0.0.0/8 and ::1. ``GuardedBackend`` enforces that
for every fetcher built in these tests: any other destination is recorded and refused, so a
test about a forbidden address can never reach one even if the code under test were broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address

import httpcore

Handler = Callable[["Request", asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class LoopbackServer:
    """A real HTTP/1.1 server on a loopback address; each test scripts its answers."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.handler, self.host, self.port, self.ssl_context = handler, host, port, ssl_context
        self.accepts = 0
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> LoopbackServer:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self.port, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def url(self, path: str = "/", *, scheme: str = "http", host: str | None = None) -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepts += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request = _parse(head)
            length = int(request.headers.get("content-length", "0"))
            request.body = await reader.readexactly(length) if length else b""
            self.requests.append(request)
            await self.handler(request, writer)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            ssl.SSLError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)


def _parse(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers, b"")


async def respond(
    writer: asyncio.StreamWriter,
    status: int = 200,
    body: bytes = b'{"ok": true}',
    headers: Iterable[tuple[str, str]] = (("Content-Type", "application/json"),),
) -> None:
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + body)
    await writer.drain()


def json_handler(body: bytes = b'{"ok": true}', content_type: str = "application/json") -> Handler:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(writer, 200, body, (("Content-Type", content_type),))

    return handle


def redirect_handler(location: str, status: int = 302) -> Handler:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(writer, status, b"", (("Location", location),))

    return handle


def is_loopback(host: str) -> bool:
    try:
        return ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Records every TCP connect; lets through only loopback ones (the machine's network rule)."""

    connects: list[tuple[str, int]] = field(default_factory=list)
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if not is_loopback(host):
            raise httpcore.ConnectError(f"test guard: {host} is not loopback, not connecting")
        return await self.inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AssertionError("no unix sockets in these tests")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@dataclass
class ScriptedResolver:
    """A resolver whose answers the test scripts: DNS peers off this machine are off limits.

    ``answers[name]`` is a list of answer sets, used in turn (the last one repeats), so a
    test can make the answer change between a first and a second lookup.
    """

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        sets = self.answers.get(host)
        if not sets:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        turn = sum(1 for name in self.calls if name == host) - 1
        return sets[min(turn, len(sets) - 1)]
