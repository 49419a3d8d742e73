"""A hostile or broken upstream, scripted byte by byte: list answers the filter cannot read
are refused (never passed on unfiltered), SSE is parsed in every framing and within bounds, a
dripping answer is cut at the call's deadline, and what the upstream asks of the client is
decided by policy and recorded."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audit.test_gateway_audit import records
from tests.gateway.scripted_upstream import (
    SSE_HEAD,
    Env,
    Request,
    bastion_in_front_of,
    json_answer,
    scripted_upstream,
)
from tests.gateway.test_resource_server import META, MODERN_HEADERS

TOOLS = [{"name": "echo", "inputSchema": {"type": "object"}},
         {"name": "write_note", "inputSchema": {"type": "object"}}]  # needs demo:write


def listing(rid: object = 1, tools: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid,
                       "result": {"tools": TOOLS if tools is None else tools}}).encode()


async def list_tools(env: Env, *, modern: bool = True) -> httpx.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"authorization": f"Bearer {env.token()}",
               "accept": "application/json, text/event-stream"}
    if modern:
        body["params"] = {"_meta": META}
        headers.update(MODERN_HEADERS, **{"mcp-method": "tools/list"})
    async with httpx.AsyncClient(timeout=60) as c:
        return await c.post(env.endpoint, json=body, headers=headers)


def answering(answer: bytes) -> Any:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
    return handler


# --- the list filter fails closed --------------------------------------------------------------

UNREADABLE_LISTS = {
    "id-as-string": json_answer(listing(rid="1")),
    "id-as-float": json_answer(listing(rid=1.0)),
    "another-id": json_answer(listing(rid=2)),
    "trailing-bytes": json_answer(listing() + b' {"x":1}'),
    "batch": json_answer(b"[" + listing() + b"]"),
    "tools-not-a-list": json_answer(b'{"jsonrpc":"2.0","id":1,"result":{"tools":{"a":1}}}'),
    "result-not-an-object": json_answer(b'{"jsonrpc":"2.0","id":1,"result":[1]}'),
    "not-utf8": json_answer(listing().replace(b"echo", b"ech\xff")),
}


@pytest.mark.parametrize("answer", UNREADABLE_LISTS.values(), ids=UNREADABLE_LISTS.keys())
async def test_a_list_answer_the_filter_cannot_read_is_refused(tmp_path: Path,
                                                               answer: bytes) -> None:
    async with scripted_upstream(answering(answer)) as up, \
            bastion_in_front_of(up.url, tmp_path) as env:
        r = await list_tools(env)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == -32001
    assert b"write_note" not in r.content


def sse(*messages: bytes, newline: bytes = b"\n") -> bytes:
    out = b""
    for i, m in enumerate(messages):
        out += b"event: message" + newline + b"id: " + str(i).encode() + newline
        out += b"data: " + m + newline + newline
    return out


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
async def test_sse_list_answers_are_filtered_in_every_line_framing(tmp_path: Path,
                                                                   newline: bytes) -> None:
    answer = SSE_HEAD + sse(b'{"jsonrpc":"2.0","method":"notifications/message","params":{}}',
                            listing(), newline=newline)
    async with scripted_upstream(answering(answer)) as up, \
            bastion_in_front_of(up.url, tmp_path) as env:
        r = await list_tools(env)
    assert r.status_code == 200
    assert b"write_note" not in r.content
    events = [line[6:] for line in r.content.split(b"\n") if line.startswith(b"data: ")]
    assert [t["name"] for t in json.loads(events[-1])["result"]["tools"]] == ["echo"]


async def test_an_sse_event_over_the_limit_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    """9 MB in one event: the old splitter gave up and passed its whole buffer on unread."""
    big = listing(tools=[*TOOLS, {"name": "pad", "description": "p" * 9_000_000}])
    answer = SSE_HEAD + sse(big)
    async with scripted_upstream(answering(answer)) as up, \
            bastion_in_front_of(up.url, tmp_path) as env:
        r = await list_tools(env)
    assert b"write_note" not in r.content
    assert len(r.content) < 10_000
    last = [line for line in r.content.split(b"\n") if line.startswith(b"data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == -32001


async def test_a_line_that_never_ends_is_cut_at_the_event_limit(tmp_path: Path) -> None:
    """32 MB without a line feed, in small pieces: parsed in linear time, cut at 8 MiB, and
    nothing of it reaches the client."""
    async def endless(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + b"data: ")
        piece = b"x" * 4096
        for _ in range(8192):
            writer.write(piece)
            await writer.drain()

    async with scripted_upstream(endless) as up, bastion_in_front_of(up.url, tmp_path) as env:
        r = await list_tools(env)
    assert b"xxxx" not in r.content
    last = [line for line in r.content.split(b"\n") if line.startswith(b"data: ")][-1]
    assert json.loads(last[6:])["error"]["code"] == -32001


async def test_a_dripping_answer_is_cut_at_the_call_deadline(tmp_path: Path) -> None:
    """One byte every 0.2 s keeps the per-read timeout from ever firing; the call's deadline
    (server.request_timeout_seconds) still ends it."""
    async def drip(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        await writer.drain()
        for _ in range(600):
            writer.write(b":")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with scripted_upstream(drip) as up, \
            bastion_in_front_of(up.url, tmp_path, server="request_timeout_seconds = 2") as env:
        started = time.monotonic()
        r = await modern_call(env, rid=7)
        elapsed = time.monotonic() - started
    assert elapsed < 30  # the drip would have gone on for 120 s
    last = [line for line in r.content.split(b"\n") if line.startswith(b"data: ")][-1]
    error = json.loads(last[6:])
    assert error["id"] == 7
    assert error["error"]["message"] == "Upstream MCP server timed out"


# --- what the upstream asks of the client ------------------------------------------------------

DENY_SAMPLING = """
[[rules]]
id = "tools"
effect = "allow"
tools = "*"

[[rules]]
id = "no-sampling"
effect = "deny"
methods = ["sampling/createMessage"]
message = "Sampling is not allowed on this mount."
"""

ALLOW_ALL = """
[[rules]]
id = "tools"
effect = "allow"
tools = "*"
"""

SAMPLING_REQUEST = (b'{"jsonrpc":"2.0","id":"s-1","method":"sampling/createMessage",'
                    b'"params":{"messages":[],"maxTokens":5}}')
DONE = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}]}}'


def sampling_then_done() -> Any:
    """A 2025-11-25 tool call that asks the client for sampling on its stream, then ends."""
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        message = request.message
        if isinstance(message, dict) and message.get("method") == "tools/call":
            writer.write(SSE_HEAD + sse(SAMPLING_REQUEST))
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(sse(DONE))
        else:  # the gateway's answer to the sampling request, in the client's place
            writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
    return handler


async def legacy_call(env: Env) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.post(env.endpoint, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {}}},
            headers={"authorization": f"Bearer {env.token()}",
                     "accept": "application/json, text/event-stream"})


async def test_bp18_a_server_request_the_policy_denies_is_not_relayed(tmp_path: Path) -> None:
    async with scripted_upstream(sampling_then_done()) as up, \
            bastion_in_front_of(up.url, tmp_path, policy=DENY_SAMPLING) as env:
        r = await legacy_call(env)
        reply = await asyncio.wait_for(up.arrived.get(), 5)
        reply = await asyncio.wait_for(up.arrived.get(), 5)
    assert r.status_code == 200
    assert b"sampling/createMessage" not in r.content
    assert b"done" in r.content
    # the upstream is answered in the client's place, so it does not wait forever
    assert reply.message["id"] == "s-1"
    assert reply.message["error"]["code"] == -32003
    assert b"authorization" not in reply.head.lower()
    asked = [rec for rec in records(env.data) if rec.get("method") == "sampling/createMessage"]
    assert [(a["decision"], a["rule"], a["extra"]["asked_by"]) for a in asked] == [
        ("deny", "no-sampling", "upstream")]


async def test_bp18_a_server_request_the_policy_allows_is_relayed_and_recorded(
        tmp_path: Path) -> None:
    async with scripted_upstream(sampling_then_done()) as up, \
            bastion_in_front_of(up.url, tmp_path, policy=ALLOW_ALL) as env:
        r = await legacy_call(env)
    assert b"sampling/createMessage" in r.content
    asked = [rec for rec in records(env.data) if rec.get("method") == "sampling/createMessage"]
    assert [(a["decision"], a["extra"]["during"]) for a in asked] == [("allow", "tools/call")]


async def modern_call(env: Env, rid: int = 1) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as c:
        return await c.post(env.endpoint, json={
            "jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": "echo", "arguments": {}, "_meta": META}},
            headers={**MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
                     "authorization": f"Bearer {env.token()}"})


async def test_a_server_request_on_a_2026_stream_is_dropped(tmp_path: Path) -> None:
    """2026-07-28 servers send no requests; one that does is not relayed."""
    answer = SSE_HEAD + sse(SAMPLING_REQUEST, DONE)
    async with scripted_upstream(answering(answer)) as up, \
            bastion_in_front_of(up.url, tmp_path) as env:
        r = await modern_call(env)
    assert b"sampling/createMessage" not in r.content
    assert b"done" in r.content


INPUT_REQUIRED = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {
    "resultType": "input_required", "requestState": "opaque",
    "inputRequests": {"ask": {"method": "sampling/createMessage",
                              "params": {"messages": [], "maxTokens": 5}}}}}).encode()


@pytest.mark.parametrize("policy", [DENY_SAMPLING, ALLOW_ALL], ids=["denied", "allowed"])
async def test_bp18_input_requests_of_a_2026_result_are_decided(tmp_path: Path,
                                                               policy: str) -> None:
    async with scripted_upstream(answering(json_answer(INPUT_REQUIRED))) as up, \
            bastion_in_front_of(up.url, tmp_path, policy=policy) as env:
        r = await modern_call(env)
    assert r.status_code == 200
    asked = [rec for rec in records(env.data) if rec.get("method") == "sampling/createMessage"]
    if policy is DENY_SAMPLING:
        assert r.json()["error"]["code"] == -32003
        assert [(a["decision"], a["extra"]["input_request"]) for a in asked] == [("deny", "ask")]
    else:
        assert r.content == INPUT_REQUIRED
        assert [a["decision"] for a in asked] == ["allow"]
