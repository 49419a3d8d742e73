"""End to end: the official Python SDK client through the gateway, both eras, HTTP and stdio."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.gateway.conftest import UPSTREAM_SECRET, Stack

MODES = ["legacy", "2026-07-28"]


@contextlib.asynccontextmanager
async def sdk_client(stack: Stack, token: str, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                              timeout=httpx2.Timeout(15, read=30))
    async with http, Client(streamable_http_client(stack.endpoint, http_client=http),
                            mode=mode, cache=None) as client:  # type: ignore[arg-type]
        yield client


async def _exercise(stack: Stack, mode: str) -> None:
    async with sdk_client(stack, stack.token("demo:read demo:write"), mode) as c:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert {"echo", "add", "write_note", "count"} <= tools
        r = await c.call_tool("add", {"a": 2, "b": 40})
        assert r.structured_content == {"result": 42}
        progress: list[float] = []

        async def on_progress(p: float, total: float | None, message: str | None) -> None:
            progress.append(p)

        r = await c.call_tool("count", {"to": 3}, progress_callback=on_progress)
        assert r.content[0].text == "counted to 3"  # type: ignore[union-attr]
        assert progress == [1, 2, 3]
        res = await c.read_resource("demo://readme")
        assert "Bastion" in res.contents[0].text  # type: ignore[union-attr]
        prompt = await c.get_prompt("summarize", {"text": "abc"})
        assert "abc" in prompt.messages[0].content.text  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_over_http_upstream(http_stack: Stack, mode: str) -> None:
    await _exercise(http_stack, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_sdk_client_over_stdio_upstream(stdio_stack: Stack, mode: str) -> None:
    await _exercise(stdio_stack, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_rs12_client_token_never_reaches_upstream(http_stack: Stack, mode: str) -> None:
    token = http_stack.token("demo:read demo:write")
    async with sdk_client(http_stack, token, mode) as c:
        await c.call_tool("echo", {"text": "hi"})
    seen = http_stack.recorder.requests
    assert seen, "the upstream received nothing"
    for headers in seen:
        assert token not in " ".join(headers.values())
        assert headers.get("authorization") == f"Bearer {UPSTREAM_SECRET}"


@pytest.mark.parametrize("mode", MODES)
async def test_list_filtering_hides_tools_the_token_cannot_call(http_stack: Stack,
                                                               mode: str) -> None:
    async with sdk_client(http_stack, http_stack.token("demo:read"), mode) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert "write_note" not in names
        assert "echo" in names


async def test_stdio_child_environment_holds_only_configured_credentials(
    stdio_stack: Stack,
) -> None:
    async with sdk_client(stdio_stack, stdio_stack.token(), "2026-07-28") as c:
        r = await c.call_tool("whoami_upstream", {})
        assert r.content[0].text == "DEMO_TOKEN"  # type: ignore[union-attr]


async def test_rs14_sdk_client_sees_insufficient_scope(http_stack: Stack) -> None:
    async with sdk_client(http_stack, http_stack.token("demo:read"), "2026-07-28") as c:
        with pytest.raises((MCPError, httpx2.HTTPStatusError)):
            await c.call_tool("write_note", {"title": "t", "body": "b"})
