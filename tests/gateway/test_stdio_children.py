"""Stdio children are capped per principal and per mount without evicting anyone, closed when
idle, bound to the caller they serve, and never left behind."""

from __future__ import annotations

import json

import pytest

from bastion.gateway.upstream import Caller
from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.stdio_support import (
    Principal,
    alive,
    eventually,
    gateway,
    no_leftover_children,
    scripted,
)
from tests.gateway.test_resource_server import INIT, LEGACY

__all__ = ["no_leftover_children"]
pytestmark = pytest.mark.usefixtures("no_leftover_children")

ALICE: Caller = ("https://as.test.example", "alice", "client-1")
BOB: Caller = ("https://as.test.example", "bob", "client-1")
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def legacy_upstream(**kw: object) -> StdioUpstream:
    return StdioUpstream("demo", scripted("--era", "legacy"), env={}, timeout=20,
                         **kw)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_principal_at_its_cap_is_refused_and_nobody_is_evicted() -> None:
    async with gateway(legacy_upstream(max_children_per_principal=2)) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        first, second = await alice.session(), await alice.session()
        refused = await alice.initialize()
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert "max_children_per_principal = 2" in error["message"]
        assert error["data"] == {"limit": "max_children_per_principal", "max": 2}
        assert "mcp-session-id" not in refused.headers
        # Someone else is not held back by Alice's cap, and Alice's sessions are intact.
        await bob.session()
        for sid in (first, second):
            assert (await alice.legacy_text(sid, "pid")).isdigit()


async def test_the_mount_cap_refuses_newcomers_instead_of_evicting_the_oldest() -> None:
    async with gateway(legacy_upstream(max_children=2)) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        first = await alice.session()
        await alice.session()
        refused = await bob.initialize()
        assert refused.status_code == 503
        assert "max_children = 2" in refused.json()["error"]["message"]
        assert (await alice.legacy_text(first, "pid")).isdigit()
        # An ended session makes room.
        r = await alice.http.delete(stack.endpoint, headers=alice._legacy_headers(first))
        assert r.status_code == 200
        await bob.session()


async def test_ts07_idle_children_are_closed_and_their_session_is_not_found() -> None:
    clock = Clock()
    up = legacy_upstream(idle_timeout=60, clock=clock)
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        sid = await alice.session()
        legacy_pid = int(await alice.legacy_text(sid, "pid"))
        modern_pid = int(await alice.text("pid"))  # the modern child: initialized by the gateway
        clock.now += 59
        assert await up.reap_idle() == 0
        clock.now += 2
        assert await up.reap_idle() == 2
        assert not alive(legacy_pid) and not alive(modern_pid)
        r = await alice.legacy(sid, LIST)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == "Session not found"
        # The client starts again (TS-07), and 2026-07-28 callers just get a new child.
        again = await alice.session()
        assert int(await alice.legacy_text(again, "pid")) != legacy_pid
        assert int(await alice.text("pid")) != modern_pid


async def test_a_child_with_an_open_stream_is_not_idle() -> None:
    clock = Clock()
    up = legacy_upstream(idle_timeout=60, clock=clock)
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        sid = await alice.session()
        pid = int(await alice.legacy_text(sid, "pid"))
        async with alice.http.stream("GET", stack.endpoint, headers={
                **alice._legacy_headers(sid), "accept": "text/event-stream"}) as events:
            assert events.status_code == 200
            clock.now += 3600
            assert await up.reap_idle() == 0
            assert alive(pid)

        async def reaped() -> bool:
            clock.now += 3600  # the gateway notes the end of the stream when it sees it
            return await up.reap_idle() == 1

        await eventually(reaped, "the child is closed once its stream is")
        assert not alive(pid)


async def test_the_reaper_runs_on_its_own_from_start_up() -> None:
    async with gateway(legacy_upstream(idle_timeout=0.2)) as stack, \
            Principal(stack, "alice") as alice:
        sid = await alice.session()
        pid = int(await alice.legacy_text(sid, "pid"))

        async def gone() -> bool:
            return not alive(pid)

        await eventually(gone, "the idle child is closed by the reaper")
        assert (await alice.legacy(sid, LIST)).status_code == 404


async def test_ts08_a_session_id_reaches_its_child_only_for_the_caller_that_opened_it() -> None:
    """The upstream checks the caller itself (not only the gateway's session store)."""
    up = legacy_upstream()
    await up.start()
    try:
        opened = await up.request("POST", {"content-type": "application/json"},
                                  json.dumps(INIT).encode(), ALICE)
        assert opened.status == 200
        sid = opened.header("mcp-session-id")
        assert sid is not None
        await opened.aclose()
        headers = {**LEGACY, "mcp-session-id": sid}
        for method, body in (("POST", json.dumps(LIST).encode()), ("GET", None),
                             ("DELETE", None)):
            resp = await up.request(method, headers, body, BOB)
            assert resp.status == 404, method
            await resp.aclose()
        resp = await up.request("POST", headers, json.dumps(LIST).encode(), ALICE)
        assert resp.status == 200
        assert b'"tools"' in b"".join([piece async for piece in resp.stream])
        await resp.aclose()
    finally:
        await up.aclose()


async def test_abandoned_sessions_leave_no_process_behind() -> None:
    """Sessions opened and never ended: shutting down closes every child (the fixture checks
    with psutil that none is left)."""
    up = legacy_upstream()
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        pids = [int(await alice.legacy_text(await alice.session(), "pid")) for _ in range(4)]
        assert all(alive(p) for p in pids)
    assert not any(alive(p) for p in pids)
