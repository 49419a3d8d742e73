"""A local stdio MCP server that relays to a remote protected MCP server (``bastion connect``).

Each newline-delimited JSON-RPC message from stdin is POSTed to the remote endpoint with the
OAuth driver as the client's ``httpx.Auth`` (tokens obtained, stored, refreshed and stepped up
there); each JSON-RPC message that comes back, whether as JSON or as an SSE stream, goes to
stdout as one line. The bridge keeps the era's transport state: the legacy session id and
protocol version, or the 2026-07-28 headers derived from each message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bastion.client.errors import ClientAuthError
from bastion.mcp.eras import META_VERSION, MODERN
from bastion.mcp.jsonrpc import required_name_param

__all__ = ["Bridge", "header_value", "sse_messages"]

log = logging.getLogger("bastion.connect")
_SAFE = re.compile(r"^[\x21-\x7E](?:[\x20-\x7E]*[\x21-\x7E])?$")


def header_value(value: str) -> str:
    """A header-safe rendering: as is when visible ASCII, else ``=?base64?...?=``."""
    if _SAFE.match(value):
        return value
    return "=?base64?" + base64.b64encode(value.encode()).decode() + "?="


async def sse_messages(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event."""
    data: list[str] = []
    async for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield "\n".join(data)


class Bridge:
    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url
        self.http = http
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self._out = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def emit(self, message: dict[str, Any]) -> None:
        async with self._out:
            sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    def _headers(self, message: dict[str, Any]) -> dict[str, str]:
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        version = meta.get(META_VERSION) if isinstance(meta, dict) else None
        method = message.get("method")
        if version == MODERN:
            headers["mcp-protocol-version"] = MODERN
            if isinstance(method, str):
                headers["mcp-method"] = header_value(method)
                # Mcp-Name goes only with the methods that require it (2026-07-28).
                key = required_name_param(method)
                if key and isinstance(params, dict) and isinstance(params.get(key), str):
                    headers["mcp-name"] = header_value(params[key])
            return headers
        if self.session_id is not None:
            headers["mcp-session-id"] = self.session_id
        if self.protocol_version is not None and method != "initialize":
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    async def forward(self, message: dict[str, Any]) -> None:
        rid = message.get("id") if "method" in message else None
        try:
            async with self.http.stream("POST", self.url, json=message,
                                        headers=self._headers(message)) as resp:
                await self._relay(message, resp)
        except ClientAuthError as exc:
            await self._error(rid, f"authorization failed: {exc}")
        except httpx.HTTPError as exc:
            await self._error(
                rid, f"the remote MCP server cannot be reached ({type(exc).__name__})")

    async def _relay(self, message: dict[str, Any], resp: httpx.Response) -> None:
        rid = message.get("id") if "method" in message else None
        sid = resp.headers.get("mcp-session-id")
        if sid and message.get("method") == "initialize":
            self.session_id = sid
        if resp.status_code == 404 and self.session_id is not None:
            self.session_id = None  # the session ended; the host will initialize again
        if resp.status_code == 202:
            return
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        if ctype == "text/event-stream":
            async for data in sse_messages(resp.aiter_lines()):
                await self._emit_text(data, message)
            return
        body = await resp.aread()
        if ctype == "application/json" and body:
            await self._emit_text(body.decode("utf-8", "replace"), message)
        elif resp.status_code >= 400:
            await self._error(rid, f"the remote MCP server answered HTTP {resp.status_code}")

    async def _emit_text(self, text: str, request: dict[str, Any]) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("the remote server sent a message that is not JSON")
            return
        if not isinstance(data, dict):
            return
        if request.get("method") == "initialize" and isinstance(data.get("result"), dict):
            version = data["result"].get("protocolVersion")
            if isinstance(version, str):
                self.protocol_version = version
        await self.emit(data)

    async def _error(self, rid: object, message: str) -> None:
        if rid is None:
            log.warning("%s", message)
            return
        await self.emit({"jsonrpc": "2.0", "id": rid,
                         "error": {"code": -32603, "message": message}})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        initializing: asyncio.Task[None] | None = None
        while True:
            line = await reader.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("ignored a line on stdin that is not JSON")
                continue
            if not isinstance(message, dict):
                continue
            if initializing is not None and not initializing.done():
                await initializing  # the session id must be known before anything else goes
            task = asyncio.create_task(self.forward(message))
            if message.get("method") == "initialize":
                initializing = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session_id is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(self.url, headers={"mcp-session-id": self.session_id})
