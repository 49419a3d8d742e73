"""The end of the gateway's request path: forward to the upstream, stream the answer back.

Invariant 1: the inbound ``Authorization`` (and every header not on the allow-list) never goes
upstream; the upstream's own credentials come from the mount's configuration. Upstream session
ids never reach the client (TS-05..TS-09).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any

from bastion.errors import JsonRpcError
from bastion.gateway.asgi import (
    BODY,
    ENVELOPE,
    ERA,
    MOUNT,
    PRINCIPAL,
    Receive,
    Scope,
    Send,
    headers_dict,
)
from bastion.gateway.event_ids import EventIdTagger, session_tag, untag
from bastion.gateway.list_filter import (
    LIST_METHODS,
    SseEventSplitter,
    rewrite_response_message,
    rewrite_sse_event,
)
from bastion.gateway.mount import Mount
from bastion.gateway.policy_gate import facts_for
from bastion.gateway.responses import send_jsonrpc_error
from bastion.gateway.sessions import Session, SessionStore
from bastion.gateway.upstream import (
    ANONYMOUS,
    Upstream,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from bastion.mcp.eras import Era
from bastion.mcp.jsonrpc import Envelope
from bastion.principal import Principal

__all__ = ["Proxy"]

log = logging.getLogger("bastion.gateway")

# Request headers that may go upstream (everything else, Authorization and Cookie included,
# stays here). Mcp-Session-Id is rewritten, not copied.
_FORWARD = ("content-type", "accept", "mcp-protocol-version", "mcp-method", "mcp-name",
            "last-event-id")
# Response headers that may come back.
_RETURN = frozenset({"content-type", "cache-control", "mcp-protocol-version", "retry-after",
                     "allow", "x-accel-buffering"})
MAX_LIST_BYTES = 32 * 1024 * 1024
SMALL_ANSWER = 64 * 1024  # a JSON answer up to this size is sent with a Content-Length
_NO_LENGTH = frozenset({204, 304})  # statuses that carry no Content-Length


async def _until_disconnect(work: Coroutine[Any, Any, None], receive: Receive) -> None:
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, watcher):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    error = task.exception() if task.done() and not task.cancelled() else None
    if error is not None:
        raise error


async def _gather(
    stream: AsyncIterator[bytes], limit: int,
) -> tuple[list[bytes], bool] | UpstreamError:
    """The first pieces of ``stream``, until more than ``limit`` bytes have come, and whether
    that was all of it; or the error it broke off with."""
    pieces: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            try:
                piece = await anext(stream)
            except StopAsyncIteration:
                return pieces, True
            pieces.append(piece)
            size += len(piece)
    except UpstreamError as exc:
        return exc
    return pieces, False


async def _send_broke_off(send: Send, request_id: object) -> None:
    await send_jsonrpc_error(send, JsonRpcError(
        JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server broke off", http_status=502,
        request_id=request_id))


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = {k: headers[k] for k in _FORWARD if k in headers}
    for k, v in headers.items():
        if k.startswith("mcp-param-"):
            out[k] = v
    out["accept-encoding"] = "identity"
    return out


class Proxy:
    def __init__(self, upstreams: Mapping[str, Upstream], sessions: SessionStore) -> None:
        self.upstreams = upstreams
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mount: Mount = scope[MOUNT]
        principal: Principal | None = scope.get(PRINCIPAL)
        binding = principal.binding if principal is not None else ANONYMOUS
        envelope: Envelope | None = scope.get(ENVELOPE)
        era: Era = scope[ERA]
        headers = headers_dict(scope)
        fwd = _forward_headers(headers)
        request_id = envelope.id if envelope is not None else None

        session: Session | None = None
        client_sid = headers.get("mcp-session-id")
        if era is Era.LEGACY and client_sid is not None:
            session = await self.sessions.lookup(client_sid, mount.name, binding)
            if session is None:
                await send_jsonrpc_error(send, JsonRpcError(
                    JsonRpcError.INVALID_REQUEST, "Session not found", http_status=404,
                    request_id=request_id))
                return
            if session.upstream_id is not None:
                fwd["mcp-session-id"] = session.upstream_id
            last_event_id = fwd.pop("last-event-id", None)
            if last_event_id is not None:
                upstream_event = untag(last_event_id, session_tag(session.id))
                if upstream_event is None:
                    # TS-10: never replay another session's stream.
                    await send_jsonrpc_error(send, JsonRpcError(
                        JsonRpcError.INVALID_REQUEST, "Last-Event-ID is not from this session",
                        http_status=404, request_id=request_id))
                    return
                fwd["last-event-id"] = upstream_event
        elif era is Era.MODERN:
            fwd.pop("last-event-id", None)

        upstream = self.upstreams[mount.name]
        try:
            resp = await upstream.request(scope["method"], fwd, scope.get(BODY), binding)
        except UpstreamTimeout:
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server timed out",
                http_status=504, request_id=request_id))
            return
        except UpstreamError:
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server unavailable",
                http_status=502, request_id=request_id))
            return
        try:
            await self._respond(scope, receive, send, mount, binding, envelope, session, resp)
        finally:
            await resp.aclose()

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        mount: Mount,
        binding: tuple[str, str, str],
        envelope: Envelope | None,
        session: Session | None,
        resp: UpstreamResponse,
    ) -> None:
        request_id = envelope.id if envelope is not None else None
        status = resp.status
        if status in (401, 403):
            # The upstream refused the gateway's own credentials. Its challenge belongs to
            # its own authorization server and must not steer the client there.
            log.warning("upstream of mount %s answered %d to the gateway", mount.name, status)
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server refused the gateway",
                http_status=502, request_id=request_id))
            return
        out: list[tuple[bytes, bytes]] = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers if k in _RETURN
        ]
        upstream_sid = resp.header("mcp-session-id")
        ended = (scope["method"] == "DELETE" and status < 500) or status == 404
        if session is not None and ended:
            await self.sessions.remove(session.id)
        elif (envelope is not None and envelope.method == "initialize" and status == 200
              and upstream_sid is not None):
            session = await self.sessions.mint(mount.name, binding, upstream_sid)
            out.append((b"mcp-session-id", session.id.encode()))
        elif session is not None and upstream_sid is not None:
            out.append((b"mcp-session-id", session.id.encode()))

        list_method = envelope.method if envelope is not None else None
        if (list_method in LIST_METHODS and status == 200 and not mount.public
                and (mount.scopes.all_scopes() or mount.policy is not None)):
            await self._send_filtered(scope, send, mount, resp, out, request_id, list_method,
                                      session)
            return
        ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
        streaming = ctype == "text/event-stream"
        tagger = (EventIdTagger(session_tag(session.id))
                  if session is not None and streaming else None)

        async def pump() -> None:
            first: list[bytes] = []
            if not streaming:
                # A JSON answer is usually small: gathered whole, it goes out with a
                # Content-Length in two writes (head, body) instead of three chunked ones,
                # and an upstream that breaks off before its end gets a clean 502.
                gathered = await _gather(resp.stream, SMALL_ANSWER)
                if isinstance(gathered, UpstreamError):
                    log.warning("upstream answer of mount %s broke: %s", mount.name, gathered)
                    await _send_broke_off(send, request_id)
                    return
                first, whole = gathered
                if whole:
                    body = b"".join(first)
                    headers = out if status in _NO_LENGTH or scope["method"] == "HEAD" else [
                        *out, (b"content-length", b"%d" % len(body))]
                    await send({"type": "http.response.start", "status": status,
                                "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
            await send({"type": "http.response.start", "status": status, "headers": out})
            if first:
                await send({"type": "http.response.body", "body": b"".join(first),
                            "more_body": True})
            try:
                async for chunk in resp.stream:
                    body = tagger.feed(chunk) if tagger is not None else chunk
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            except UpstreamError as exc:
                log.warning("upstream stream of mount %s broke: %s", mount.name, exc)
            rest = tagger.flush() if tagger is not None else b""
            await send({"type": "http.response.body", "body": rest, "more_body": False})

        if streaming:
            # A stream can outlive its client: stop relaying (and release the upstream
            # connection) as soon as the client goes away.
            await _until_disconnect(pump(), receive)
        else:
            await pump()

    async def _send_filtered(
        self,
        scope: Scope,
        send: Send,
        mount: Mount,
        resp: UpstreamResponse,
        out: list[tuple[bytes, bytes]],
        request_id: object,
        list_method: str,
        session: Session | None,
    ) -> None:
        principal: Principal = scope[PRINCIPAL]
        rules = mount.scopes
        policy = mount.policy.current if mount.policy is not None else None

        def visible(call_method: str, name: str) -> bool:
            # One definition, two uses: what decides calls also decides what is listed.
            if rules.hierarchy.missing(principal.scopes, rules.required(call_method, name)):
                return False
            return policy is None or policy.visible(
                facts_for(scope, mount, principal, call_method, name, {}))

        ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
        if ctype == "text/event-stream":
            await send({"type": "http.response.start", "status": 200, "headers": out})
            splitter = SseEventSplitter()
            tagger = EventIdTagger(session_tag(session.id)) if session is not None else None
            try:
                async for chunk in resp.stream:
                    for event in splitter.feed(chunk):
                        body = rewrite_sse_event(event, request_id, list_method, visible)
                        if tagger is not None:
                            body = tagger.feed(body)
                        await send({"type": "http.response.body", "body": body,
                                    "more_body": True})
            except (UpstreamError, ValueError) as exc:
                log.warning("upstream stream of mount %s broke: %s", mount.name, exc)
            await send({"type": "http.response.body", "body": splitter.rest(),
                        "more_body": False})
            return
        gathered = await _gather(resp.stream, MAX_LIST_BYTES)
        if isinstance(gathered, UpstreamError) or not gathered[1]:  # broken off, or too large
            await _send_broke_off(send, request_id)
            return
        body = b"".join(gathered[0])
        new = rewrite_response_message(body, request_id, list_method, visible)
        if new is None:
            new = body
        headers = [(k, v) for k, v in out if k != b"content-length"]
        headers.append((b"content-length", str(len(new)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": new})


