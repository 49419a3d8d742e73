"""The ``httpx.Auth`` driver, driven by hand: what it sends, and when it asks the session to
act (CL-12..CL-14, CL-32, CL-33)."""

from __future__ import annotations

import json

import httpx
import pytest

from bastion.client.auth import McpOAuth, operation_of
from bastion.client.challenge import Challenge
from bastion.client.token_requests import TokenSet

SERVER = "https://mcp.example.com/mcp"
FIRST = TokenSet("tok-1", requested_scopes=("mcp:basic",))
SECOND = TokenSet("tok-2", requested_scopes=("mcp:basic", "mcp:write"))


class FakeSession:
    def __init__(self, tokens: TokenSet | None = None, step_ups: int = 1) -> None:
        self.tokens = tokens
        self.calls: list[tuple[str, object]] = []
        self.step_ups_left = step_ups

    def origin_matches(self, url: str) -> bool:
        return url.startswith("https://mcp.example.com/")

    async def current_token(self) -> TokenSet | None:
        return self.tokens

    async def handle_unauthorized(self, challenge: Challenge | None,
                                  rejected: TokenSet | None) -> TokenSet:
        self.calls.append(("unauthorized", (challenge, rejected)))
        self.tokens = FIRST
        return FIRST

    async def step_up(self, challenge: Challenge, operation: str) -> TokenSet | None:
        self.calls.append(("step_up", (challenge.scopes, operation)))
        if self.step_ups_left == 0:
            return None
        self.step_ups_left -= 1
        self.tokens = SECOND
        return SECOND

    def operation_succeeded(self, operation: str) -> None:
        self.calls.append(("succeeded", operation))

    async def aclose(self) -> None:
        pass


def call(name: str) -> httpx.Request:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}}
    return httpx.Request("POST", SERVER, content=json.dumps(body).encode())


def challenge_response(status: int, header: str) -> httpx.Response:
    return httpx.Response(status, headers={"WWW-Authenticate": header})


async def test_401_discovers_and_resends_with_the_bearer_in_the_header() -> None:
    session = FakeSession()
    flow = McpOAuth(session).async_auth_flow(call("add"))
    request = await flow.__anext__()
    assert "Authorization" not in request.headers
    request = await flow.asend(challenge_response(
        401, 'Bearer resource_metadata="https://mcp.example.com/prm", scope="mcp:basic"'))
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert "tok-1" not in str(request.url)
    kind, (challenge, rejected) = session.calls[0]  # type: ignore[misc]
    assert kind == "unauthorized" and rejected is None
    assert challenge == Challenge("bearer", None, ("mcp:basic",), "https://mcp.example.com/prm")
    with pytest.raises(StopAsyncIteration):
        await flow.asend(httpx.Response(200))
    assert session.calls[-1] == ("succeeded", "tools/call add")


async def test_a_second_401_is_returned_not_looped() -> None:
    session = FakeSession(FIRST)
    flow = McpOAuth(session).async_auth_flow(call("add"))
    request = await flow.__anext__()
    assert request.headers["Authorization"] == "Bearer tok-1"
    await flow.asend(challenge_response(401, 'Bearer error="invalid_token"'))
    with pytest.raises(StopAsyncIteration):
        await flow.asend(challenge_response(401, 'Bearer error="invalid_token"'))
    assert [c[0] for c in session.calls] == ["unauthorized"]


async def test_403_insufficient_scope_steps_up_and_resends() -> None:
    session = FakeSession(FIRST)
    flow = McpOAuth(session).async_auth_flow(call("write"))
    await flow.__anext__()
    request = await flow.asend(challenge_response(
        403, 'Bearer error="insufficient_scope", scope="mcp:write"'))
    assert request.headers["Authorization"] == "Bearer tok-2"
    assert session.calls[0] == ("step_up", (("mcp:write",), "tools/call write"))
    with pytest.raises(StopAsyncIteration):
        await flow.asend(httpx.Response(200))


async def test_step_up_stops_when_the_session_says_so() -> None:
    session = FakeSession(FIRST, step_ups=1)
    flow = McpOAuth(session).async_auth_flow(call("admin"))
    await flow.__anext__()
    denied = challenge_response(403, 'Bearer error="insufficient_scope", scope="mcp:admin"')
    await flow.asend(denied)
    with pytest.raises(StopAsyncIteration):
        await flow.asend(denied)
    assert [c[0] for c in session.calls] == ["step_up", "step_up"]


async def test_403_without_insufficient_scope_is_not_a_step_up() -> None:
    session = FakeSession(FIRST)
    flow = McpOAuth(session).async_auth_flow(call("x"))
    await flow.__anext__()
    with pytest.raises(StopAsyncIteration):
        await flow.asend(httpx.Response(403))
    assert session.calls == []


async def test_no_token_for_another_origin() -> None:
    session = FakeSession(FIRST)
    request = httpx.Request("GET", "https://elsewhere.example/mcp",
                            headers={"Authorization": "Bearer stale"})
    flow = McpOAuth(session).async_auth_flow(request)
    sent = await flow.__anext__()
    assert "Authorization" not in sent.headers


def test_sync_use_is_refused() -> None:
    flow = McpOAuth(FakeSession()).sync_auth_flow(call("x"))
    with pytest.raises(RuntimeError, match="AsyncClient"):
        next(flow)


def test_operation_key() -> None:
    assert operation_of("POST", b'{"method": "resources/read", "params": {"uri": "a://b"}}') == (
        "resources/read a://b")
    assert operation_of("POST", b'{"method": "tools/list"}') == "tools/list"
    assert operation_of("GET", b"") == "GET"
    assert operation_of("POST", b"\xff") == "POST"
