"""TS-10: resumption through the gateway never replays another session's stream, even when the
upstream keeps one event store for every session."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings

from bastion.demo.server import build_server
from bastion.gateway.event_ids import session_tag, tag_event, untag
from bastion.gateway.upstream_http import HttpUpstream
from bastion.mcp.sse import SseParser, encode_event
from tests.gateway.conftest import _gateway
from tests.gateway.test_resource_server import INIT, LEGACY
from tests.support import SigningIssuer, free_port, serve


class SharedEventStore(EventStore):
    """One store for all sessions: the naive upstream the gateway must protect."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []
        self.ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: object) -> str:
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str,
                                  send_callback: EventCallback) -> str | None:
        found = [e for e in self.events if e[0] == last_event_id]
        if not found:
            return None
        stream = found[0][1]
        after = False
        for event_id, stream_id, message in self.events:
            if after and stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))  # type: ignore[arg-type]
            after = after or event_id == last_event_id
        return stream


@dataclass
class Env:
    endpoint: str
    issuer: SigningIssuer


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    app = build_server().streamable_http_app(
        event_store=SharedEventStore(),
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    issuer = SigningIssuer()
    async with serve(app) as up:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        upstream = HttpUpstream(up + "/mcp", credentials={}, connect_timeout=2, read_timeout=5)
        async with serve(_gateway(base, issuer, upstream), port):
            yield Env(base + "/mcp/demo", issuer)


async def open_session(http: httpx.AsyncClient, env: Env, token: str) -> str:
    r = await http.post(env.endpoint, json=INIT,
                        headers={**LEGACY, "authorization": f"Bearer {token}"})
    assert r.status_code == 200
    return r.headers["mcp-session-id"]


async def test_ts10_event_ids_are_tagged_and_bound_to_the_session(env: Env) -> None:
    resource = env.endpoint
    alice = env.issuer.mint(audience=resource, scope="demo:read", subject="alice")
    bob = env.issuer.mint(audience=resource, scope="demo:read", subject="bob")
    async with httpx.AsyncClient(timeout=10) as http:
        a_sid = await open_session(http, env, alice)
        b_sid = await open_session(http, env, bob)
        h_a = {**LEGACY, "authorization": f"Bearer {alice}", "mcp-session-id": a_sid,
               "mcp-protocol-version": "2025-11-25"}
        r = await http.post(env.endpoint, headers=h_a, json={
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "count", "arguments": {"to": 3}, "_meta": {"progressToken": 7}}})
        ids = re.findall(r"^id: (\S+)\r?$", r.text, re.M)
        assert ids, r.text
        tag = session_tag(a_sid).decode()
        assert all(i.startswith(tag + ".") for i in ids)
        first = ids[0]
        h_b = {**LEGACY, "authorization": f"Bearer {bob}", "mcp-session-id": b_sid,
               "mcp-protocol-version": "2025-11-25", "last-event-id": first}
        stolen = await http.get(env.endpoint, headers={**h_b, "accept": "text/event-stream"})
        assert stolen.status_code == 404
        raw = await http.get(env.endpoint, headers={**h_b, "accept": "text/event-stream",
                                                    "last-event-id": untag(first, tag.encode())
                                                    or ""})
        assert raw.status_code == 404
        async with http.stream("GET", env.endpoint, headers={
                **h_a, "accept": "text/event-stream", "last-event-id": first}) as own:
            assert own.status_code == 200
            replayed = b""
            async for chunk in own.aiter_bytes():
                replayed += chunk
                if b"counted to 3" in replayed:
                    break
        assert f"id: {tag}.".encode() in replayed


def test_ids_split_across_chunks_are_tagged() -> None:
    parser = SseParser()
    stream = b"event: message\nid: 41\ndata: {}\n\nid: 42\r\ndata: {}\r\n\r\n"
    events = [e for i in range(0, len(stream), 3) for e in parser.feed(stream[i:i + 3])]
    out = b"".join(encode_event(tag_event(e, b"t")) for e in events)
    assert out == b"event: message\nid: t.41\ndata: {}\n\nid: t.42\ndata: {}\n\n"
