"""For the stdio tests: the fixtures' commands, a gateway in front of a given stdio upstream,
raw requests of either era for one principal, and the check that no child process is left."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.conftest import Stack, _gateway
from tests.gateway.test_resource_server import INIT, LEGACY, META, MODERN_HEADERS
from tests.support import Recorder, SigningIssuer, free_port, serve

HERE = Path(__file__).parent
DEMO = [sys.executable, "-m", "bastion.demo.server"]
LEGACY_SDK = [sys.executable, str(HERE / "legacy_sdk_stdio.py")]


def scripted(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "scripted_stdio.py"), *args]


def _children() -> set[int]:
    out = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
async def no_leftover_children() -> AsyncIterator[None]:
    """Fails a test that leaves a child process of this one behind."""
    before = _children()
    yield
    deadline = time.monotonic() + 10
    left = _children() - before
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        left = _children() - before
    assert not left, f"child processes left behind: {sorted(left)}"


async def eventually(check: Callable[[], Awaitable[bool]], what: str,
                     within: float = 15) -> None:
    """Wait until ``check`` holds (polling), failing with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway(upstream: StdioUpstream) -> AsyncIterator[Stack]:
    issuer = SigningIssuer()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gw = _gateway(base, issuer, upstream)
    async with serve(gw, port):
        yield Stack(base, base + "/mcp/demo", base + "/mcp/demo", issuer, Recorder(gw), gw)


def messages(resp: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer, JSON or SSE."""
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in resp.text.splitlines()
                if line.startswith("data:")]
    return [resp.json()]


def text_of(message: dict[str, Any]) -> str:
    text: str = message["result"]["content"][0]["text"]
    return text


class SseReader:
    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self._lines = resp.aiter_lines()

    async def next(self) -> dict[str, Any]:
        async for line in self._lines:
            if line.startswith("data:"):
                message: dict[str, Any] = json.loads(line[5:])
                return message
        raise AssertionError("the stream ended")


class Principal:
    """Raw requests to the gateway with one principal's token."""

    def __init__(self, stack: Stack, subject: str) -> None:
        self.stack = stack
        self.token = stack.token(subject=subject)
        self.http = httpx.AsyncClient(timeout=30)

    async def __aenter__(self) -> Principal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def _modern_headers(self, method: str, name: str | None) -> dict[str, str]:
        h = {**MODERN_HEADERS, "mcp-method": method, "authorization": f"Bearer {self.token}"}
        if name is not None:
            h["mcp-name"] = name
        return h

    @staticmethod
    def call_body(name: str, arguments: dict[str, Any] | None = None, rid: int | str = 1,
                  progress: Any = None) -> dict[str, Any]:
        meta = dict(META)
        if progress is not None:
            meta["progressToken"] = progress
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": name, "arguments": arguments or {}, "_meta": meta}}

    async def call(self, name: str, arguments: dict[str, Any] | None = None,
                   rid: int | str = 1, progress: Any = None) -> httpx.Response:
        return await self.http.post(self.stack.endpoint,
                                    json=self.call_body(name, arguments, rid, progress),
                                    headers=self._modern_headers("tools/call", name))

    async def text(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        r = await self.call(name, arguments)
        assert r.status_code == 200, r.text
        return text_of(messages(r)[-1])

    @contextlib.asynccontextmanager
    async def streaming(self, name: str, arguments: dict[str, Any] | None = None,
                        rid: int | str = 1, progress: Any = None) -> AsyncIterator[SseReader]:
        async with self.http.stream(
                "POST", self.stack.endpoint, json=self.call_body(name, arguments, rid, progress),
                headers=self._modern_headers("tools/call", name)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            yield SseReader(resp)

    async def modern(self, method: str, params: dict[str, Any] | None = None,
                     rid: int | str | None = 1) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method,
                                "params": {**(params or {}), "_meta": META}}
        if rid is not None:
            body["id"] = rid
        return await self.http.post(self.stack.endpoint, json=body,
                                    headers=self._modern_headers(method, None))

    async def initialize(self) -> httpx.Response:
        return await self.http.post(self.stack.endpoint, json=INIT, headers={
            **LEGACY, "authorization": f"Bearer {self.token}"})

    async def session(self) -> str:
        r = await self.initialize()
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        await self.legacy(sid, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        return sid

    def _legacy_headers(self, sid: str) -> dict[str, str]:
        return {**LEGACY, "authorization": f"Bearer {self.token}", "mcp-session-id": sid,
                "mcp-protocol-version": "2025-11-25"}

    async def legacy(self, sid: str, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post(self.stack.endpoint, json=body,
                                    headers=self._legacy_headers(sid))

    async def legacy_text(self, sid: str, name: str) -> str:
        r = await self.legacy(sid, {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                    "params": {"name": name, "arguments": {}}})
        assert r.status_code == 200, r.text
        return text_of(messages(r)[-1])
