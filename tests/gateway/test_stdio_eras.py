"""The gateway speaks a stdio child's era: it probes it (server/discover first), initializes a
legacy child itself for 2026-07-28 callers and translates, keeps the child's server-to-client
requests from them, and refuses a legacy initialize on a server that speaks only 2026-07-28."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError

from bastion.gateway.stdio_eras import Verdict, discover_result, probe_verdict, to_legacy, to_modern
from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.stdio_support import (
    DEMO,
    LEGACY_SDK,
    Principal,
    gateway,
    messages,
    no_leftover_children,
    scripted,
    text_of,
)
from tests.gateway.test_sdk_client import _exercise, sdk_client

__all__ = ["no_leftover_children"]
pytestmark = pytest.mark.usefixtures("no_leftover_children")


def stdio(command: list[str], **kw: object) -> StdioUpstream:
    return StdioUpstream("demo", command, env={}, timeout=20, **kw)  # type: ignore[arg-type]


# --- real SDK clients -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["2026-07-28", "auto", "legacy"])
async def test_sdk_client_of_either_era_over_a_legacy_only_stdio_server(mode: str) -> None:
    """The official SDK's handshake-only loop as the child; the official SDK client in front."""
    async with gateway(stdio(LEGACY_SDK)) as stack:
        await _exercise(stack, mode)
        async with sdk_client(stack, stack.token(), mode) as client:
            expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
            assert client.protocol_version == expected
            if mode == "2026-07-28":
                return  # a client pinned to a version does not ask who the server is
            assert client.server_info is not None
            assert client.server_info.name == "bastion-demo"
            assert client.instructions == "A demo server behind the Bastion gateway."


async def test_sdk_client_auto_over_the_dual_era_demo_server() -> None:
    async with gateway(stdio(DEMO)) as stack:
        await _exercise(stack, "auto")
        async with sdk_client(stack, stack.token(), "auto") as client:
            assert client.protocol_version == "2026-07-28"


# --- translation, seen on the wire ------------------------------------------------------------


async def test_a_legacy_child_gets_no_modern_metadata_and_results_get_a_result_type() -> None:
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice:
        r = await alice.call("meta", progress="tok")
        [answer] = messages(r)
        assert text_of(answer) == "progressToken"  # no io.modelcontextprotocol/* key reached it
        assert answer["result"]["resultType"] == "complete"
        # The child was probed, then initialized once by the gateway, then served.
        assert (await alice.text("methods")).split(",")[:3] == [
            "server/discover", "initialize", "tools/call"]


async def test_server_discover_is_answered_from_the_initialize_result() -> None:
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice:
        r = await alice.modern("server/discover", rid="d1")
        assert r.status_code == 200
        assert r.json() == {"jsonrpc": "2.0", "id": "d1", "result": {
            "resultType": "complete", "ttlMs": 0, "cacheScope": "private",
            "supportedVersions": ["2026-07-28"],
            # listChanged and subscribe need subscriptions/listen, which cannot be served
            "capabilities": {"tools": {}, "resources": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "scripted",
                                                             "version": "0.1"}},
            "instructions": "A scripted server."}}
        r = await alice.modern("subscriptions/listen", {"notifications": {}})
        assert r.json()["error"]["code"] == -32601


async def test_a_legacy_child_cannot_send_requests_to_modern_callers() -> None:
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice:
        r = await alice.call("ask")
        got = messages(r)
        assert [m for m in got if "method" in m] == []
        # The child was answered by the gateway with an error, and went on.
        assert text_of(got[-1]) == "error -32601"


async def test_a_legacy_session_still_gets_its_childs_requests() -> None:
    """In the legacy era a server-to-client request is the session's own business."""
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice:
        sid = await alice.session()
        async with alice.http.stream("POST", stack.endpoint, headers=alice._legacy_headers(sid),
                                     json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                           "params": {"name": "ask"}}) as resp:
            lines = resp.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    assert '"sampling/createMessage"' in line
                    ask_id = json.loads(line[5:])["id"]
                    break
            answered = await alice.legacy(sid, {"jsonrpc": "2.0", "id": ask_id, "result": {
                "role": "assistant", "content": {"type": "text", "text": "hi"},
                "model": "m"}})
            assert answered.status_code == 202
            async for line in lines:
                if line.startswith("data:"):
                    assert '"answered"' in line
                    break


async def test_initialize_from_a_modern_caller_does_not_reach_a_legacy_child() -> None:
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice:
        assert (await alice.text("pid")).isdigit()
        r = await alice.modern("initialize", {"protocolVersion": "2025-11-25",
                                              "capabilities": {"sampling": {}},
                                              "clientInfo": {"name": "x", "version": "1"}})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == -32022
        assert (await alice.text("methods")).count("initialize") == 1


# --- the probe --------------------------------------------------------------------------------


async def test_a_legacy_child_silent_to_the_probe_is_initialized_after_the_probe_timeout(
) -> None:
    up = stdio(scripted("--era", "legacy", "--silent-probe"), probe_timeout=0.3)
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        assert (await alice.text("pid")).isdigit()


async def test_a_modern_child_is_served_as_it_is() -> None:
    async with gateway(stdio(scripted("--era", "modern"))) as stack, \
            Principal(stack, "alice") as alice:
        assert (await alice.text("methods")).split(",") == ["server/discover", "tools/call"]


async def test_a_configured_era_is_not_probed() -> None:
    up = stdio(scripted("--era", "legacy"), protocol="2025-11-25")
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        assert (await alice.text("methods")).split(",") == ["initialize", "tools/call"]


async def test_the_era_is_probed_once_per_mount() -> None:
    async with gateway(stdio(scripted("--era", "legacy"))) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        assert (await alice.text("methods")).startswith("server/discover,")
        assert (await bob.text("methods")).split(",") == ["initialize", "tools/call"]


# --- legacy callers on a modern-only server ---------------------------------------------------


@pytest.mark.parametrize("protocol", ["auto", "2026-07-28"])
async def test_legacy_initialize_on_a_modern_only_server_is_refused_clearly(
        protocol: str) -> None:
    spawns: list[tuple[str, ...]] = []

    async def record(command: tuple[str, ...]) -> None:
        spawns.append(command)

    up = stdio(scripted("--era", "modern"), protocol=protocol)
    up.on_spawn = record
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        r = await alice.initialize()
        assert r.status_code == 400
        assert "mcp-session-id" not in r.headers
        error = r.json()["error"]
        assert error["code"] == -32022
        assert "2026-07-28 only" in error["message"]
        assert error["data"] == {"supported": ["2026-07-28"], "requested": "2025-11-25"}
        assert len(spawns) == (1 if protocol == "auto" else 0)
        # and the caps were given back
        assert len(up.pool) == 0


async def test_sdk_legacy_client_on_a_modern_only_server_sees_the_versions() -> None:
    async with gateway(stdio(scripted("--era", "modern"))) as stack:
        with pytest.raises(ExceptionGroup) as failed:
            async with sdk_client(stack, stack.token(), "legacy"):
                pass
        error: BaseException = failed.value
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        assert isinstance(error, MCPError)
        assert error.code == -32022
        assert "speaks 2026-07-28 only" in str(error)


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "verdict"), [
    ({"result": {"supportedVersions": ["2026-07-28"], "capabilities": {}}}, Verdict.MODERN),
    ({"result": {"supportedVersions": ["2025-11-25"]}}, Verdict.LEGACY),
    ({"result": {}}, Verdict.LEGACY),
    ({"error": {"code": -32601, "message": "Method not found"}}, Verdict.LEGACY),
    ({"error": {"code": -32602, "message": "not initialized"}}, Verdict.LEGACY),
    ({"error": {"code": -32022, "message": "x", "data": {"supported": ["2026-07-28"]}}},
     Verdict.MODERN),
    ({"error": {"code": -32022, "message": "x", "data": {"supported": ["2099-01-01"]}}},
     Verdict.INCOMPATIBLE),
    ({"error": {"code": -32022, "message": "x", "data": {"supported": ["2025-11-25"]}}},
     Verdict.LEGACY),
    ({"error": {"code": -32022, "message": "x"}}, Verdict.LEGACY),
])
def test_probe_verdicts(answer: dict[str, object], verdict: Verdict) -> None:
    assert probe_verdict(answer) is verdict


def test_translation_keeps_what_is_not_the_modern_envelope() -> None:
    modern = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {},
                               "progressToken": 4, "com.example/trace": "t"}}}
    assert to_legacy(modern)["params"] == {"name": "x", "_meta": {
        "progressToken": 4, "com.example/trace": "t"}}
    bare = {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    assert to_legacy(bare)["params"] == {}
    assert to_modern({"id": 1, "result": {"content": []}}, "tools/call")["result"] == {
        "resultType": "complete", "content": []}
    assert to_modern({"id": 1, "result": {"tools": []}}, "tools/list")["result"] == {
        "resultType": "complete", "ttlMs": 0, "cacheScope": "private", "tools": []}
    assert to_modern({"id": 1, "result": {"resultType": "input_required"}}, "tools/call")[
        "result"] == {"resultType": "input_required"}
    assert to_modern({"id": 1, "error": {"code": 1}}, "tools/list") == {
        "id": 1, "error": {"code": 1}}
    assert "_meta" not in discover_result({"protocolVersion": "2025-11-25"})
