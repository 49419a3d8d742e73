"""Upstream down, hanging or crashing: a clear JSON-RPC error, never a hang or a gateway 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bastion.gateway.upstream_http import HttpUpstream
from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.conftest import _gateway
from tests.gateway.test_resource_server import META, MODERN_HEADERS, call
from tests.support import SigningIssuer, free_port, serve

CRASHY = str(Path(__file__).with_name("crashy_stdio.py"))


@contextlib.asynccontextmanager
async def gateway_with(upstream: object, issuer: SigningIssuer) -> AsyncIterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gw = _gateway(base, issuer, upstream)  # type: ignore[arg-type]
    async with serve(gw, port):
        yield base


async def tool(base: str, issuer: SigningIssuer, name: str, timeout: float = 20) -> httpx.Response:
    token = issuer.mint(audience=base + "/mcp/demo", scope="demo:read")
    async with httpx.AsyncClient(timeout=timeout) as c:
        return await c.post(base + "/mcp/demo", json=call(name, {}), headers={
            **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": name,
            "authorization": f"Bearer {token}"})


async def test_upstream_down_is_502_with_jsonrpc_error() -> None:
    issuer = SigningIssuer()
    dead = HttpUpstream(f"http://127.0.0.1:{free_port()}/mcp", credentials={},
                        connect_timeout=1, read_timeout=2)
    async with gateway_with(dead, issuer) as base:
        r = await tool(base, issuer, "echo")
    assert r.status_code == 502
    body = r.json()
    assert body["id"] == 1
    assert body["error"]["code"] == -32001
    assert "unavailable" in body["error"]["message"]


async def test_the_cause_of_a_502_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    issuer = SigningIssuer()
    port = free_port()
    dead = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=1,
                        read_timeout=2)
    async with gateway_with(dead, issuer) as base:
        r = await tool(base, issuer, "echo")
    assert r.status_code == 502
    [line] = [rec.getMessage() for rec in caplog.records if "upstream unavailable" in
              rec.getMessage()]
    assert "mount demo" in line
    assert f"127.0.0.1:{port}" in line
    assert "ConnectionRefusedError" in line


async def test_upstream_hanging_is_504_within_the_read_timeout() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    issuer = SigningIssuer()
    hanging = HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={},
                           connect_timeout=1, read_timeout=1)
    try:
        async with gateway_with(hanging, issuer) as base:
            loop = asyncio.get_running_loop()
            started = loop.time()
            r = await tool(base, issuer, "echo")
            elapsed = loop.time() - started
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
    assert r.status_code == 504
    assert r.json()["error"]["code"] == -32001
    assert elapsed < 10


async def test_stdio_child_crashing_mid_call_answers_with_an_error_then_restarts() -> None:
    issuer = SigningIssuer()
    upstream = StdioUpstream("demo", [sys.executable, CRASHY], env={}, backoff=0.05,
                             timeout=10)
    async with gateway_with(upstream, issuer) as base:
        first = await tool(base, issuer, "echo")
        assert first.status_code == 200
        pid_before = first.json()["result"]["content"][0]["text"]
        crashed = await tool(base, issuer, "crash")
        assert crashed.status_code == 200
        assert crashed.json()["error"]["code"] == -32001
        assert crashed.json()["id"] == 1
        again = await tool(base, issuer, "echo")
        assert again.status_code == 200
        assert again.json()["result"]["content"][0]["text"] != pid_before


async def test_stdio_child_that_never_answers_times_out() -> None:
    issuer = SigningIssuer()
    upstream = StdioUpstream("demo", [sys.executable, CRASHY], env={}, timeout=1)
    async with gateway_with(upstream, issuer) as base:
        r = await tool(base, issuer, "hang")
    assert r.status_code == 504
    assert r.json()["error"]["code"] == -32001


async def test_stdio_command_gone_after_start_up_is_502(tmp_path: Path) -> None:
    """(A command missing at start-up fails the start-up: tests/gateway/test_stdio_start.py.)"""
    program = tmp_path / "server"
    program.write_text(f"#!{sys.executable}\n")
    program.chmod(0o755)
    issuer = SigningIssuer()
    upstream = StdioUpstream("demo", [str(program)], env={}, timeout=2)
    async with gateway_with(upstream, issuer) as base:
        program.unlink()
        r = await tool(base, issuer, "echo")
    assert r.status_code == 502
    assert r.json()["error"]["message"] == "Upstream MCP server unavailable"


@contextlib.asynccontextmanager
async def raw_upstream(answer: bytes) -> AsyncIterator[HttpUpstream]:
    """An upstream that reads one request and writes ``answer`` (bytes as given), then closes."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield HttpUpstream(f"http://127.0.0.1:{port}/mcp", credentials={}, connect_timeout=2,
                           read_timeout=2)
    finally:
        server.close()
        await server.wait_closed()


async def test_an_answer_broken_off_midway_is_502_not_a_truncated_200() -> None:
    issuer = SigningIssuer()
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n"
              b'\r\n{"jsonrpc":"2.0","id":1,"res')
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        r = await tool(base, issuer, "echo")
    assert r.status_code == 502
    assert r.json()["id"] == 1
    assert r.json()["error"]["code"] == -32001


async def test_a_json_answer_goes_out_whole_with_its_length() -> None:
    issuer = SigningIssuer()
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'
    # chunked from the upstream, in two chunks: the client still gets one counted body
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
              b"transfer-encoding: chunked\r\n\r\n"
              b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:]))
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        r = await tool(base, issuer, "echo")
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))
    assert "transfer-encoding" not in r.headers


def _large_answer() -> tuple[bytes, bytes]:
    text = "x" * 300_000
    body = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"%s"}]}}' % (
        text.encode())
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
              b"\r\n%s" % (len(body), body))
    return body, answer


async def test_a_large_json_answer_is_relayed_intact() -> None:
    """Past the size the gateway gathers (64 KiB), an answer nothing needs to read (here a
    2025-11-25 call's) is passed on as it arrives."""
    issuer = SigningIssuer()
    body, answer = _large_answer()
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        token = issuer.mint(audience=base + "/mcp/demo", scope="demo:read")
        async with httpx.AsyncClient(timeout=20) as c:
            r = await c.post(base + "/mcp/demo", json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "echo", "arguments": {}}},
                headers={"authorization": f"Bearer {token}",
                         "accept": "application/json, text/event-stream"})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers.get("transfer-encoding") == "chunked"


async def test_a_large_2026_answer_is_read_whole_and_relayed_intact() -> None:
    """A 2026-07-28 tools/call answer may be an InputRequiredResult, which policy decides:
    it is read whole (up to MAX_INSPECTED_BYTES) before it goes on."""
    issuer = SigningIssuer()
    body, answer = _large_answer()
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        r = await tool(base, issuer, "echo")
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-length"] == str(len(body))


async def list_tools(base: str, issuer: SigningIssuer) -> httpx.Response:
    token = issuer.mint(audience=base + "/mcp/demo", scope="demo:read")
    async with httpx.AsyncClient(timeout=20) as c:
        return await c.post(base + "/mcp/demo", json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}},
            headers={**MODERN_HEADERS, "mcp-method": "tools/list",
                     "authorization": f"Bearer {token}"})


async def test_a_list_answer_broken_off_midway_is_502() -> None:
    """A list answer is read whole to be filtered: one that breaks off is a 502, never a
    truncated or unfiltered list."""
    issuer = SigningIssuer()
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n"
              b'\r\n{"jsonrpc":"2.0","id":1,"result":{"tools":[')
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        r = await list_tools(base, issuer)
    assert r.status_code == 502
    assert r.json()["id"] == 1
    assert r.json()["error"]["code"] == -32001


async def test_a_list_answer_past_the_size_bound_is_502(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.gateway import proxy

    monkeypatch.setattr(proxy, "MAX_INSPECTED_BYTES", 1000)
    issuer = SigningIssuer()
    tools = [{"name": f"t{i}", "inputSchema": {"type": "object"}} for i in range(100)]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}}).encode()
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
              b"\r\n%s" % (len(body), body))
    async with raw_upstream(answer) as up, gateway_with(up, issuer) as base:
        r = await list_tools(base, issuer)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == -32001
