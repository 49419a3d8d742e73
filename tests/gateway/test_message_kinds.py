"""What a client may send the gateway: every message that names a method is decided (scope,
policy, rate limit, audit), notifications included; a message without an id that the protocol
does not define for clients never reaches the upstream; bodies that are not UTF-8 Unicode text
and repeated Host or Authorization headers are refused before anything else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.demo.server import make_http_app
from tests.audit.test_gateway_audit import records
from tests.gateway.conftest import Stack
from tests.gateway.scripted_upstream import Env, bastion_in_front_of
from tests.gateway.test_resource_server import META, MODERN_HEADERS
from tests.support import Recorder, serve

LEGACY_HEADERS = {"accept": "application/json, text/event-stream",
                  "content-type": "application/json"}


def headers_for(era: str, token: str, method: str, name: str | None = None) -> dict[str, str]:
    if era == "legacy":
        return {**LEGACY_HEADERS, "authorization": f"Bearer {token}"}
    out = {**MODERN_HEADERS, "mcp-method": method, "authorization": f"Bearer {token}"}
    if name is not None:
        out["mcp-name"] = name
    return out


def message(era: str, method: str, params: dict[str, Any], rid: object = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method,
                            "params": {**params, "_meta": META} if era == "modern" else params}
    if rid is not None:
        body["id"] = rid
    return body


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[tuple[Env, Recorder]]:
    recorder = Recorder(make_http_app())
    async with serve(recorder) as up, bastion_in_front_of(
            up + "/mcp", tmp_path, policy=POLICY,
            extra_mount='rate_limits = [{ key = "principal", per_minute = 1, burst = 3 }]'
    ) as env:
        yield env, recorder


POLICY = """
[[rules]]
id = "tools"
effect = "allow"
tools = "*"

[[rules]]
id = "no-cancelling"
effect = "deny"
methods = ["notifications/cancelled"]
message = "Cancelling is not allowed here."
"""


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_a_call_without_an_id_is_refused_and_never_reaches_the_upstream(
        demo: tuple[Env, Recorder], era: str) -> None:
    """The token has demo:read only: with an id, write_note would be a 403 step-up; without
    one it used to skip every gate and reach the upstream as a call."""
    env, recorder = demo
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(env.endpoint, json=message(
            era, "tools/call", {"name": "write_note", "arguments": {"title": "t", "body": "b"}}),
            headers=headers_for(era, env.token(), "tools/call", "write_note"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32600
    assert "needs an id" in r.json()["error"]["message"]
    assert recorder.requests == []


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_defined_client_notifications_are_decided_and_recorded(
        demo: tuple[Env, Recorder], era: str) -> None:
    env, recorder = demo
    async with httpx.AsyncClient(timeout=20) as c:
        denied = await c.post(env.endpoint, json=message(
            era, "notifications/cancelled", {"requestId": 5}),
            headers=headers_for(era, env.token(), "notifications/cancelled"))
    assert denied.status_code == 403
    assert denied.json()["error"] == {"code": -32003,
                                      "message": "Cancelling is not allowed here."}
    assert recorder.requests == []
    [record] = [r for r in records(env.data) if r.get("method") == "notifications/cancelled"]
    assert (record["decision"], record["rule"]) == ("deny", "no-cancelling")


async def test_notifications_count_against_the_rate_limit(demo: tuple[Env, Recorder]) -> None:
    env, recorder = demo
    statuses = []
    async with httpx.AsyncClient(timeout=20) as c:
        for _ in range(4):
            r = await c.post(env.endpoint, json=message(
                "legacy", "notifications/initialized", {}),
                headers=headers_for("legacy", env.token(), "notifications/initialized"))
            statuses.append(r.status_code)
    # burst 3: three go through (the upstream answers them as it will), the fourth is metered
    assert statuses[-1] == 429
    assert len(recorder.requests) == 3
    decisions = [r["decision"] for r in records(env.data)
                 if r.get("method") == "notifications/initialized"
                 and r["kind"] == "gateway.decision"]
    assert decisions == ["allow", "allow", "allow", "deny"]


@pytest.mark.parametrize(("era", "method"), [
    ("legacy", "notifications/message"), ("legacy", "sampling/createMessage"),
    ("modern", "notifications/initialized"), ("modern", "notifications/progress")])
async def test_a_notification_the_era_does_not_define_for_clients_is_refused(
        demo: tuple[Env, Recorder], era: str, method: str) -> None:
    env, recorder = demo
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(env.endpoint, json=message(era, method, {}),
                         headers=headers_for(era, env.token(), method))
    assert r.status_code == 400
    assert recorder.requests == []


async def test_a_2026_client_sends_no_responses(demo: tuple[Env, Recorder]) -> None:
    env, recorder = demo
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(env.endpoint, json={"jsonrpc": "2.0", "id": 3, "result": {}},
                         headers={**MODERN_HEADERS, "authorization": f"Bearer {env.token()}"})
    assert r.status_code == 400
    assert recorder.requests == []


# --- Unicode ----------------------------------------------------------------------------------

def _call(name: str, text: str = "x") -> bytes:
    return (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"%s",'
            b'"arguments":{"text":"%s"},"_meta":%s}}' % (name.encode(), text.encode(),
                                                        json.dumps(META).encode()))


MALFORMED_TEXT = {
    "lone-surrogate-in-method": _call("echo").replace(b"tools/call", b"tools/call\\ud800"),
    "lone-surrogate-in-name": _call("echo\\udc00"),
    "lone-surrogate-in-arguments": _call("echo", "a\\udbff b"),
    "surrogate-encoded-in-utf8": _call("echo", "a").replace(b'"a"', b'"a\xed\xa0\x80"'),
    "invalid-utf8": _call("echo", "a").replace(b'"a"', b'"a\xff"'),
    "utf16": _call("echo").decode().encode("utf-16"),
    "utf8-bom": b"\xef\xbb\xbf" + _call("echo"),
}


@pytest.mark.parametrize("body", MALFORMED_TEXT.values(), ids=MALFORMED_TEXT.keys())
async def test_a_body_that_is_not_unicode_text_is_refused(stdio_stack: Stack,
                                                          body: bytes) -> None:
    """Before: 503 "audit trail unavailable" for a surrogate in a name, a 120 s hang for one
    anywhere in a 2026-07-28 request to a stdio upstream, UTF-16 forwarded as it came."""
    token = stdio_stack.token()
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(stdio_stack.endpoint, content=body, headers={
            **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
            "authorization": f"Bearer {token}"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] in (-32700, -32600)


async def test_a_surrogate_pair_is_one_character_and_passes(stdio_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=20) as c:
        r = await c.post(stdio_stack.endpoint, content=_call("echo", "\\ud83d\\ude00"), headers={
            **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
            "authorization": f"Bearer {stdio_stack.token()}"})
    assert r.status_code == 200
    assert r.json()["result"]["content"][0]["text"] == "\U0001f600"


# --- repeated headers -------------------------------------------------------------------------

async def raw_exchange(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return answer


@pytest.mark.parametrize("path", ["/mcp/demo", "/token"])
@pytest.mark.parametrize("repeated", ["host", "authorization"])
async def test_rs13_a_repeated_host_or_authorization_header_is_400(
        demo: tuple[Env, Recorder], path: str, repeated: str) -> None:
    """Each alone would pass on to the next check (the MCP call, or a token request answered
    401 invalid_client); repeated, the request is refused before any of them."""
    env, recorder = demo
    if path == "/token":
        body, ctype = b"grant_type=client_credentials&scope=demo%3Aread", \
            "application/x-www-form-urlencoded"
        credentials = ["Basic eDp5", "Basic eTp6"]
    else:
        body, ctype = _call("echo"), "application/json"
        credentials = [f"Bearer {env.token()}", f"Bearer {env.token(subject='bob')}"]
    hosts = ["127.0.0.1", "evil.example"] if repeated == "host" else ["127.0.0.1"]
    auths = credentials if repeated == "authorization" else credentials[:1]
    lines = [f"POST {path} HTTP/1.1", *(f"Host: {h}" for h in hosts),
             *(f"Authorization: {a}" for a in auths), f"Content-Type: {ctype}",
             f"Content-Length: {len(body)}", "Connection: close"]
    if path == "/mcp/demo":
        lines += [f"{k}: {v}" for k, v in MODERN_HEADERS.items() if k != "content-type"]
        lines += ["Mcp-Method: tools/call", "Mcp-Name: echo"]
    answer = await raw_exchange(env.base, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert b"more than one" in answer
    assert recorder.requests == []
