"""Callers of one stdio mount never reach each other (2026-07-28): their request ids and
progress tokens are rewritten per exchange, a cancellation reaches only the sender's own
request, a client that goes away cancels its request, and by default each principal has a
server process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from bastion.gateway.upstream import Caller
from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.stdio_support import (
    Principal,
    eventually,
    gateway,
    messages,
    no_leftover_children,
    scripted,
    text_of,
)

__all__ = ["no_leftover_children"]
pytestmark = pytest.mark.usefixtures("no_leftover_children")


def upstream(**kw: object) -> StdioUpstream:
    return StdioUpstream("demo", scripted("--era", "modern"), env={}, timeout=20,
                         **kw)  # type: ignore[arg-type]


HEADERS = {"content-type": "application/json", "mcp-protocol-version": "2026-07-28"}


async def text(up: StdioUpstream, caller: Caller, name: str) -> str:
    """A call made straight to the upstream (no gateway in front)."""
    resp = await up.request("POST", HEADERS, json.dumps(Principal.call_body(name)).encode(),
                            caller)
    body = b"".join([piece async for piece in resp.stream])
    await resp.aclose()
    return text_of(json.loads(body))


async def parked(p: Principal, count: int) -> None:
    async def check() -> bool:
        return await p.text("parked") == str(count)

    await eventually(check, f"{count} calls parked on the child")


async def test_ts09_progress_tokens_and_ids_chosen_alike_by_two_callers_stay_apart() -> None:
    """Both callers use request id 1 and progress token "t" on one shared child."""
    async with gateway(upstream(isolation="shared")) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        a = asyncio.create_task(alice.call("wait", {"marker": "A"}, rid=1, progress="t"))
        await parked(alice, 1)
        b = asyncio.create_task(bob.call("wait", {"marker": "B"}, rid=1, progress="t"))
        await parked(alice, 2)
        assert await alice.text("release") == "released"
        for resp, marker in ((await a, "A"), (await b, "B")):
            got = messages(resp)
            progress = [m["params"] for m in got if m.get("method") == "notifications/progress"]
            assert progress == [
                {"progressToken": "t", "progress": 0, "message": f"parked {marker}"},
                {"progressToken": "t", "progress": 1, "message": marker}]
            assert got[-1]["id"] == 1
            assert text_of(got[-1]) == marker


async def test_ts09_a_cancellation_reaches_only_the_senders_own_request() -> None:
    async with gateway(upstream(isolation="shared")) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob, \
            alice.streaming("wait", {"marker": "A"}, rid=1, progress="p") as stream:
        assert (await stream.next())["params"]["message"] == "parked A"
        # Bob names Alice's request id (and every child id it could have): nothing happens.
        for rid in (1, 2, 3, 4, "1"):
            r = await bob.modern("notifications/cancelled", {"requestId": rid}, rid=None)
            assert r.status_code == 202
        assert await bob.text("cancelled") == ""
        assert await bob.text("parked") == "1"
        # Alice cancels her own: it reaches the child, under the child's id for it.
        r = await alice.modern("notifications/cancelled", {"requestId": 1}, rid=None)
        assert r.status_code == 202
        assert await alice.text("cancelled") == "A"


async def test_a_client_that_goes_away_cancels_its_request_on_the_child() -> None:
    """2026-07-28 basic/patterns/cancellation.mdx: over HTTP the end of the stream is the
    cancellation; on stdio the gateway must say it with notifications/cancelled."""
    async with gateway(upstream()) as stack, Principal(stack, "alice") as alice:
        async with alice.streaming("wait", {"marker": "A"}, progress=5) as stream:
            assert (await stream.next())["params"]["message"] == "parked A"

        async def cancelled() -> bool:
            return await alice.text("cancelled") == "A"

        await eventually(cancelled, "the child was told the request is cancelled")
        assert await alice.text("parked") == "0"


async def test_bp18_each_principal_has_a_server_process_of_its_own_by_default() -> None:
    async with gateway(upstream()) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        assert await alice.text("remember", {"value": "alice's secret"}) == "ok"
        assert await bob.text("recall") == "None"
        assert await alice.text("recall") == "alice's secret"
        assert await alice.text("pid") != await bob.text("pid")


async def test_shared_isolation_is_one_process_for_everyone() -> None:
    async with gateway(upstream(isolation="shared")) as stack, \
            Principal(stack, "alice") as alice, Principal(stack, "bob") as bob:
        assert await alice.text("pid") == await bob.text("pid")


async def test_a_request_given_up_before_any_answer_is_cancelled_on_the_child() -> None:
    """Whoever stops waiting for the upstream (the proxy, when its client goes away) makes the
    gateway tell the child."""
    up = upstream()
    await up.start()
    try:
        alice: Caller = ("https://as.test.example", "alice", "client-1")
        body = json.dumps(Principal.call_body("wait", {"marker": "A"})).encode()
        waiting = asyncio.create_task(up.request("POST", HEADERS, body, alice))

        async def parked_on_child() -> bool:
            return await text(up, alice, "parked") == "1"

        await eventually(parked_on_child, "the call is parked on the child")
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting

        async def cancelled() -> bool:
            return await text(up, alice, "cancelled") == "A"

        await eventually(cancelled, "the child was told the request is cancelled")
    finally:
        await up.aclose()



async def test_a_client_that_goes_away_before_any_answer_cancels_its_request() -> None:
    """No progress asked for, so nothing reaches the client before the answer: the proxy still
    notices the client leaving (2026-07-28: the end of the exchange is the cancellation)."""
    async with gateway(upstream()) as stack, Principal(stack, "alice") as alice:
        call = asyncio.create_task(alice.call("wait", {"marker": "A"}))

        async def parked() -> bool:
            async with Principal(stack, "alice") as again:
                return await again.text("parked") == "1"

        await eventually(parked, "the call is parked on the child")
        call.cancel()  # the client gives up and closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await call

        async def cancelled() -> bool:
            async with Principal(stack, "alice") as again:
                return await again.text("cancelled") == "A"

        await eventually(cancelled, "the child was told the request is cancelled")
