"""An HTTP/1.1 upstream on loopback whose answers a test scripts byte by byte: for what a
well-behaved MCP server never sends (wrong ids, batches, CR-only SSE, endless lines, a drip,
requests of the client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    head: bytes
    body: bytes

    @property
    def message(self) -> Any:
        return json.loads(self.body) if self.body else None


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Scripted:
    url: str
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Queue[Request] = field(default_factory=asyncio.Queue)


def json_answer(body: bytes, status: str = "200 OK") -> bytes:
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status.encode(), len(body), body))


SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n")


@contextlib.asynccontextmanager
async def scripted_upstream(handler: Handler) -> AsyncIterator[Scripted]:
    """Each connection: one request read (head and Content-Length body), then ``handler``
    writes whatever it likes; the connection is closed when it returns."""
    tasks: set[asyncio.Task[None]] = set()
    scripted = Scripted("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            request = Request(head, await reader.readexactly(length))
            scripted.requests.append(request)
            scripted.arrived.put_nowait(request)
            await handler(request, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    scripted.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
    try:
        yield scripted
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await server.wait_closed()


@dataclass
class Env:
    """A whole Bastion (built-in AS, audit trail, policy) in front of one upstream."""

    base: str
    endpoint: str
    data: Any
    runtime: Any

    def token(self, scope: str = "demo:read", subject: str = "alice") -> str:
        import time

        from bastion.server.tokens import mint_access_token

        token, _ = mint_access_token(
            self.runtime.extras["keys"], issuer=self.runtime.config.issuer, subject=subject,
            client_id="c1", audience=self.endpoint, scopes=scope.split(), lifetime=300,
            now=time.time())
        return token


@contextlib.asynccontextmanager
async def bastion_in_front_of(upstream_url: str, tmp_path: Any, *, policy: str | None = None,
                              extra_mount: str = "", server: str = "") -> AsyncIterator[Env]:
    """``bastion serve`` as a user configures it (read from a file), on a free port."""
    from bastion.config.load import load_config
    from bastion.runtime import build_runtime
    from tests.support import free_port, serve

    port = free_port()
    if policy is not None:
        (tmp_path / "policy.toml").write_text(policy)
        extra_mount += '\npolicy = "policy.toml"'
    (tmp_path / "bastion.toml").write_text(
        f'data_dir = "data"\n[server]\nport = {port}\n{server}\n'
        '[scope_implies]\n"demo:write" = ["demo:read"]\n'
        '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
        f'tool_scopes = {{ write_note = ["demo:write"] }}\n{extra_mount}\n'
        f'[mounts.upstream]\nurl = "{upstream_url}"\n')
    runtime = await build_runtime(load_config(tmp_path / "bastion.toml"), source="test")
    async with serve(runtime.app, port) as base:
        yield Env(base, base + "/mcp/demo", tmp_path / "data", runtime)
