"""The end of the gateway's request path: forward to the upstream, stream the answer back.

Invariant 1: the inbound ``Authorization`` (and every header not on the allow-list) never goes
upstream; the upstream's own credentials come from the mount's configuration. Upstream session
ids never reach the client (TS-05..TS-09).

An upstream is not trusted. Every SSE event it streams is parsed (``bastion.mcp.sse``: linear
time, bounded size) and written back in canonical form; list answers are filtered and what the
filter cannot read is refused (502, or an error event once a stream has started); what the
upstream asks of the client is decided by policy (``upstream_asks``); and one call, from the
request to the end of its answer, never outlasts ``request_timeout`` however slowly the upstream
drips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from bastion.audit import AuditLog
from bastion.errors import JsonRpcError
from bastion.gateway.asgi import (
    BODY,
    ENVELOPE,
    ERA,
    MOUNT,
    PRINCIPAL,
    Message,
    Receive,
    Scope,
    Send,
    headers_dict,
)
from bastion.gateway.event_ids import session_tag, tag_event, untag
from bastion.gateway.list_filter import LIST_METHODS, filter_list_response
from bastion.gateway.mount import Mount
from bastion.gateway.policy_gate import facts_for
from bastion.gateway.responses import send_jsonrpc_error
from bastion.gateway.sessions import Session, SessionStore
from bastion.gateway.upstream import (
    ANONYMOUS,
    Caller,
    Upstream,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from bastion.gateway.upstream_asks import UpstreamAsks
from bastion.mcp.eras import Era
from bastion.mcp.jsonrpc import Envelope, error_body
from bastion.mcp.server_messages import (
    UnreadableMessage,
    input_requests,
    may_name_method,
    may_require_input,
    parse_message,
)
from bastion.mcp.sse import SseEvent, SseParser, SseTooLarge, encode_event
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
# The most of an answer the gateway reads whole to inspect it (list results to filter, a
# 2026-07-28 result that may ask for input); a larger one is refused, never passed unread.
MAX_INSPECTED_BYTES = 32 * 1024 * 1024
SMALL_ANSWER = 64 * 1024  # a JSON answer up to this size is sent with a Content-Length
_NO_LENGTH = frozenset({204, 304})  # statuses that carry no Content-Length
# 2026-07-28 MRTR: the requests whose answer may be an InputRequiredResult
_INPUT_CAPABLE = frozenset({"tools/call", "prompts/get", "resources/read"})


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


def _forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = {k: headers[k] for k in _FORWARD if k in headers}
    for k, v in headers.items():
        if k.startswith("mcp-param-"):
            out[k] = v
    out["accept-encoding"] = "identity"
    return out


class _Sent:
    """``send``, remembering whether the response has started."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


@dataclass
class _Exchange:
    """One client request on its way through the proxy."""

    scope: Scope
    mount: Mount
    principal: Principal | None
    envelope: Envelope | None
    era: Era
    caller: Caller
    upstream: Upstream
    forward: dict[str, str]
    session: Session | None
    asks: UpstreamAsks

    @property
    def request_id(self) -> object:
        return self.envelope.id if self.envelope is not None else None

    @property
    def method(self) -> str | None:
        return self.envelope.method if self.envelope is not None else None

    @property
    def list_method(self) -> str | None:
        """The list method whose answer is filtered, if any."""
        mount, method = self.mount, self.method
        if (method in LIST_METHODS and not mount.public and self.principal is not None
                and (mount.scopes.all_scopes() or mount.policy is not None)):
            return method
        return None

    @property
    def may_require_input(self) -> bool:
        return self.era is Era.MODERN and self.method in _INPUT_CAPABLE

    def visible(self, call_method: str, name: str) -> bool:
        # One definition, two uses: what decides calls also decides what is listed.
        principal, rules = self.principal, self.mount.scopes
        assert principal is not None
        if rules.hierarchy.missing(principal.scopes, rules.required(call_method, name)):
            return False
        policy = self.mount.policy
        return policy is None or policy.current.visible(
            facts_for(self.scope, self.mount, principal, call_method, name, {}))

    async def reply_upstream(self, body: bytes) -> None:
        """Answer a request of the upstream in the client's place (2025-11-25 sessions)."""
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        for name in ("mcp-protocol-version", "mcp-session-id"):
            if name in self.forward:
                headers[name] = self.forward[name]
        try:
            resp = await self.upstream.request("POST", headers, body, self.caller)
            await resp.aclose()
        except UpstreamError as exc:
            log.warning("mount %s: the refusal could not be sent to the upstream: %s",
                        self.mount.name, exc)


class Proxy:
    def __init__(self, upstreams: Mapping[str, Upstream], sessions: SessionStore, *,
                 audit: AuditLog | None = None, request_timeout: float = 120.0) -> None:
        self.upstreams = upstreams
        self.sessions = sessions
        self.audit = audit
        self.request_timeout = request_timeout

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
        ex = _Exchange(scope, mount, principal, envelope, era, binding, upstream, fwd, session,
                       UpstreamAsks(scope, mount, principal, era, envelope, self.audit, None))
        if era is Era.LEGACY:
            ex.asks.reply = ex.reply_upstream
        sent = _Sent(send)
        if scope["method"] == "GET":  # an event stream: it lasts as long as both ends want
            await self._exchange(ex, receive, sent)
            return
        try:
            async with asyncio.timeout(self.request_timeout):
                if era is Era.MODERN:
                    # 2026-07-28: a client that goes away cancels its request (cancellation
                    # .mdx), also while the upstream has not answered yet.
                    await _until_disconnect(self._exchange(ex, None, sent), receive)
                else:
                    await self._exchange(ex, receive, sent)
        except TimeoutError:
            log.warning("mount %s: the upstream's answer to %s took longer than %g s",
                        mount.name, ex.method or scope["method"], self.request_timeout)
            if not sent.started:
                await send_jsonrpc_error(send, JsonRpcError(
                    JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server timed out",
                    http_status=504, request_id=request_id))
            else:
                await _end_with_error(send, ex, "Upstream MCP server timed out")

    async def _exchange(self, ex: _Exchange, receive: Receive | None, send: _Sent) -> None:
        """``receive`` is None when the caller already watches for the client going away."""
        scope = ex.scope
        try:
            resp = await ex.upstream.request(scope["method"], ex.forward, scope.get(BODY),
                                             ex.caller)
        except UpstreamTimeout as exc:
            log.warning("mount %s: upstream timed out: %s", ex.mount.name, exc)
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server timed out",
                http_status=504, request_id=ex.request_id))
            return
        except UpstreamError as exc:
            log.warning("mount %s: upstream unavailable: %s", ex.mount.name, exc)
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.UPSTREAM_UNAVAILABLE, "Upstream MCP server unavailable",
                http_status=502, request_id=ex.request_id))
            return
        try:
            await self._respond(ex, receive, send, resp)
        finally:
            await resp.aclose()

    async def _respond(self, ex: _Exchange, receive: Receive | None, send: _Sent,
                       resp: UpstreamResponse) -> None:
        mount = ex.mount
        status = resp.status
        if status in (401, 403):
            # The upstream refused the gateway's own credentials. Its challenge belongs to
            # its own authorization server and must not steer the client there.
            log.warning("upstream of mount %s answered %d to the gateway", mount.name, status)
            await _refuse(send, ex, "Upstream MCP server refused the gateway")
            return
        out: list[tuple[bytes, bytes]] = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.headers if k in _RETURN
        ]
        await self._session_headers(ex, resp, out)
        ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
        if ctype == "text/event-stream":
            # A stream can outlive its client: stop relaying (and release the upstream
            # connection) as soon as the client goes away.
            relay = _relay_events(ex, send, resp, status, out)
            await (relay if receive is None else _until_disconnect(relay, receive))
        elif status == 200 and (ex.list_method is not None or ex.may_require_input):
            await _send_inspected(ex, send, resp, out)
        else:
            await _send_plain(ex, send, resp, status, out)

    async def _session_headers(self, ex: _Exchange, resp: UpstreamResponse,
                               out: list[tuple[bytes, bytes]]) -> None:
        session, status = ex.session, resp.status
        upstream_sid = resp.header("mcp-session-id")
        ended = (ex.scope["method"] == "DELETE" and status < 500) or status == 404
        if session is not None and ended:
            await self.sessions.remove(session.id)
        elif ex.method == "initialize" and status == 200 and upstream_sid is not None:
            ex.session = await self.sessions.mint(ex.mount.name, ex.caller, upstream_sid)
            out.append((b"mcp-session-id", ex.session.id.encode()))
        elif session is not None and upstream_sid is not None:
            out.append((b"mcp-session-id", session.id.encode()))


async def _refuse(send: _Sent, ex: _Exchange, message: str, status: int = 502) -> None:
    await send_jsonrpc_error(send, JsonRpcError(
        JsonRpcError.UPSTREAM_UNAVAILABLE, message, http_status=status,
        request_id=ex.request_id))


async def _end_with_error(send: Send, ex: _Exchange, message: str) -> None:
    """End a stream that has started with an error for the client's request (if it has an
    id to answer), instead of whatever the upstream would have sent."""
    body = b""
    if ex.request_id is not None:
        data = error_body(JsonRpcError.UPSTREAM_UNAVAILABLE, message, ex.request_id)
        body = encode_event(SseEvent([(b"event", b"message"), (b"data", data)]))
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_plain(ex: _Exchange, send: _Sent, resp: UpstreamResponse, status: int,
                      out: list[tuple[bytes, bytes]]) -> None:
    """A JSON (or empty) answer nothing needs to read: a small one is gathered whole and goes
    out with a Content-Length, a large one is streamed on."""
    gathered = await _gather(resp.stream, SMALL_ANSWER)
    if isinstance(gathered, UpstreamError):
        log.warning("upstream answer of mount %s broke: %s", ex.mount.name, gathered)
        await _refuse(send, ex, "Upstream MCP server broke off")
        return
    first, whole = gathered
    if whole:
        body = b"".join(first)
        headers = out if status in _NO_LENGTH or ex.scope["method"] == "HEAD" else [
            *out, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": b"".join(first), "more_body": True})
    try:
        async for chunk in resp.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError as exc:
        log.warning("upstream stream of mount %s broke: %s", ex.mount.name, exc)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_inspected(ex: _Exchange, send: _Sent, resp: UpstreamResponse,
                          out: list[tuple[bytes, bytes]]) -> None:
    """A JSON answer the gateway must read (a list to filter, a result that may ask for
    input): read whole, inspected, re-sent; what cannot be read is refused with 502."""
    gathered = await _gather(resp.stream, MAX_INSPECTED_BYTES)
    if isinstance(gathered, UpstreamError) or not gathered[1]:  # broken off, or too large
        log.warning("mount %s: the upstream's answer broke off or exceeds %d bytes",
                    ex.mount.name, MAX_INSPECTED_BYTES)
        await _refuse(send, ex, "Upstream MCP server broke off")
        return
    body = b"".join(gathered[0])
    try:
        new = await _inspect_answer(ex, body)
    except UnreadableMessage as exc:
        log.warning("mount %s: refused an answer the gateway cannot read: %s",
                    ex.mount.name, exc)
        await _refuse(send, ex, "Upstream MCP server sent an answer the gateway cannot read")
        return
    headers = [(k, v) for k, v in out if k != b"content-length"]
    headers.append((b"content-length", b"%d" % len(new)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": new})


async def _inspect_message(ex: _Exchange, message: dict[str, Any]) -> bytes | None:
    """For an answer (an upstream message without ``method``): what to send instead, or None
    to send it as it came. Raises ``UnreadableMessage`` for what must be refused."""
    if ex.list_method is not None:
        return filter_list_response(message, ex.request_id, ex.list_method, ex.visible)
    if ex.may_require_input:
        asked = input_requests(message)
        if asked is not None:
            refused = await ex.asks.input_requests(asked)
            if refused is not None:
                return error_body(JsonRpcError.POLICY_DENIED, refused, ex.request_id)
    return None


def _must_read(ex: _Exchange, payload: bytes) -> bool:
    return (ex.list_method is not None or may_name_method(payload)
            or (ex.may_require_input and may_require_input(payload)))


async def _inspect_answer(ex: _Exchange, payload: bytes) -> bytes:
    """The JSON body to send for ``payload``, the whole answer of the upstream."""
    if not _must_read(ex, payload):
        return payload
    message = parse_message(payload)
    if "method" in message:
        raise UnreadableMessage("a request or notification instead of the answer")
    new = await _inspect_message(ex, message)
    return payload if new is None else new


async def _relay_events(ex: _Exchange, send: _Sent, resp: UpstreamResponse, status: int,
                        out: list[tuple[bytes, bytes]]) -> None:
    """Relay an SSE answer event by event: each one parsed, decided and re-encoded."""
    await send({"type": "http.response.start", "status": status, "headers": out})
    parser = SseParser()
    tag = session_tag(ex.session.id) if ex.session is not None else None
    try:
        async for chunk in resp.stream:
            for event in parser.feed(chunk):
                body = await _relay_event(ex, event, tag)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
    except UpstreamError as exc:
        log.warning("upstream stream of mount %s broke: %s", ex.mount.name, exc)
    except (SseTooLarge, UnreadableMessage) as exc:
        log.warning("mount %s: ended an upstream stream the gateway cannot read: %s",
                    ex.mount.name, exc)
        await _end_with_error(send, ex, "Upstream MCP server sent an event the gateway "
                              "cannot read")
        return
    if parser.close() is not None:
        log.info("mount %s: the upstream's stream ended inside an event (dropped)",
                 ex.mount.name)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _relay_event(ex: _Exchange, event: SseEvent, tag: bytes | None) -> bytes | None:
    """The event as the client gets it, or None when it is not relayed."""
    data = event.data
    if data is not None and data.strip() and _must_read(ex, data):
        message = parse_message(data)
        if "method" in message:
            if "id" in message and not await ex.asks.stream_request(message):
                return None
        else:
            new = await _inspect_message(ex, message)
            if new is not None:
                event = event.with_data(new)
    if tag is not None:
        event = tag_event(event, tag)
    return encode_event(event)
