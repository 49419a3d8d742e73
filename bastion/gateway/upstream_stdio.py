"""A stdio MCP server, spawned and bridged by the gateway.

Who gets which process:

- 2025-11-25 and earlier: each client session gets its own child (spawned on ``initialize``),
  bound to the caller that opened it, so server-to-client messages have exactly one place to
  go. A session id used by anyone else is not found.
- 2026-07-28: with ``isolation = "principal"`` (the default) each caller gets a child of its
  own, so a server that keeps state in its process never mixes two users' state; with
  ``"shared"`` (opt-in, for stateless servers) one child answers every caller.

On any child, request ids and progress tokens are rewritten per exchange and mapped back
(``stdio_routes``), and a caller's ``notifications/cancelled`` reaches only its own requests.
In 2026-07-28, the end of a caller's response stream cancels its request on the child.

Children are capped per caller and per mount (a caller at a cap gets a clear error; nobody
else's child is evicted), and closed after ``idle_timeout`` seconds without an exchange or an
open stream; a session whose child was closed is not found (404), so its client starts again.

The child's era is probed as 2026-07-28 basic/transports/stdio.mdx says, and a legacy child
serving 2026-07-28 callers is initialized by the gateway and translated (``stdio_eras``).
A legacy ``initialize`` on a mount whose server speaks only 2026-07-28 is refused with an error
that names the version to use (not translated: a legacy session's server-to-client requests
would have nowhere to go in that era).

A child that dies answers every call in flight with a JSON-RPC error (never a hang); the next
request restarts it after a backoff that doubles up to a ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bastion.errors import JsonRpcError
from bastion.gateway.stdio_child import StdioChild, base_environment, missing_program
from bastion.gateway.stdio_eras import (
    METHOD_NOT_FOUND,
    UNSUPPORTED_PROTOCOL_VERSION,
    Verdict,
    discover_result,
    modern_only_refusal,
)
from bastion.gateway.stdio_pool import CapReached, ChildPool, Slot
from bastion.gateway.stdio_routes import Exchange
from bastion.gateway.upstream import (
    ANONYMOUS,
    Caller,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from bastion.mcp.eras import MODERN
from bastion.mcp.jsonrpc import error_body

__all__ = ["Isolation", "StdioChild", "StdioUpstream", "base_environment"]

log = logging.getLogger("bastion.upstream")

Isolation = Literal["principal", "shared"]
ProtocolSetting = Literal["auto", "2025-11-25", "2026-07-28"]

CHILD_EXITED = JsonRpcError.UPSTREAM_UNAVAILABLE
_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache"),
        ("x-accel-buffering", "no")]
_MAX_FAILURES = 32  # doublings of the restart backoff worth counting (it has a ceiling)


def _configured_verdict(protocol: ProtocolSetting) -> Verdict | None:
    if protocol == "auto":
        return None
    return Verdict.MODERN if protocol == MODERN else Verdict.LEGACY


def _dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _sse(message: bytes) -> bytes:
    return b"event: message\ndata: " + message + b"\n\n"


def _plain(
    status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> UpstreamResponse:
    async def one() -> AsyncIterator[bytes]:
        if body:
            yield body

    headers = list(_JSON) if body else []
    return UpstreamResponse(status, headers + (extra or []), one())


def _not_found(sid: str | None, request_id: object = None) -> UpstreamResponse:
    if sid:
        return _plain(404, error_body(JsonRpcError.INVALID_REQUEST, "Session not found",
                                      request_id))
    return _plain(400, error_body(JsonRpcError.INVALID_REQUEST, "Missing session ID",
                                  request_id))


def _cap_answer(cap: CapReached, request_id: object) -> UpstreamResponse:
    return _plain(cap.status, error_body(JsonRpcError.UPSTREAM_UNAVAILABLE, cap.message,
                                         request_id, {"limit": cap.setting, "max": cap.limit}))


class _Finish:
    """Ends one exchange exactly once: forgets it on the child (telling the child to stop when
    it is unanswered and ``cancel``), and marks the slot used."""

    def __init__(self, upstream: StdioUpstream, slot: Slot, child: StdioChild,
                 exchange: Exchange | None, *, cancel: bool) -> None:
        self.upstream, self.slot, self.child, self.exchange = upstream, slot, child, exchange
        self.cancel = cancel
        self.done = False

    async def aclose(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            if self.exchange is not None:
                await self.child.finish(self.exchange, cancel=self.cancel,
                                        reason="the client went away or timed out")
        finally:
            self.upstream.pool.leave(self.slot)


class StdioUpstream:
    def __init__(
        self,
        mount: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 120.0,
        isolation: Isolation = "principal",
        protocol: ProtocolSetting = "auto",
        max_children: int = 64,
        max_children_per_principal: int = 8,
        idle_timeout: float = 600.0,
        probe_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mount = mount
        self.command = tuple(command)
        self.env = {**base_environment(), **env}
        self.cwd = cwd
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.isolation = isolation
        self.protocol = protocol
        self.idle_timeout = idle_timeout
        self.probe_timeout = probe_timeout
        self.pool = ChildPool(mount, per_owner=max_children_per_principal, total=max_children,
                              clock=clock)
        # Called with the exact command before each spawn (the audit trail records it; a
        # failure to record refuses the spawn).
        self.on_spawn: Callable[[tuple[str, ...]], Awaitable[None]] | None = None
        # The era of the mount's server, once known (a property of the server: probed once).
        self._verdict = _configured_verdict(protocol)
        # Restart backoff per owner: (failures, earliest next start on time.monotonic()).
        self._backoff: dict[Caller | None, tuple[int, float]] = {}
        self._reaper: asyncio.Task[None] | None = None

    def _where(self, cause: str) -> str:
        return f"stdio server of mount {self.mount}: {cause}"

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Check that the command can run at all (a typo fails start-up, naming the mount and
        the command), and start closing idle children."""
        cause = missing_program(self.command, self.env, self.cwd)
        if cause is not None:
            raise UpstreamError(f"mount {self.mount}: the stdio server cannot start: {cause} "
                                f"(command: {shlex.join(self.command)})")
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def aclose(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        await self._close(self.pool.take_all())

    async def reap_idle(self) -> int:
        """Close the children idle for ``idle_timeout`` (and the dead ones); how many."""
        slots = self.pool.take_idle(self.idle_timeout)
        for slot in slots:
            if slot.child is not None and slot.child.alive:
                log.info("closing the idle stdio server of mount %s (pid %s)", self.mount,
                         slot.child.proc.pid if slot.child.proc else "?")
        await self._close(slots)
        now = time.monotonic()
        for owner, (_, next_start) in list(self._backoff.items()):
            if next_start + self.backoff_max < now:
                del self._backoff[owner]
        return len(slots)

    async def _reap_forever(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("closing idle stdio servers of mount %s failed", self.mount)

    @staticmethod
    async def _close(slots: list[Slot]) -> None:
        children = [s.child for s in slots if s.child is not None]
        await asyncio.gather(*(c.aclose() for c in children), return_exceptions=True)

    # -- spawning ---------------------------------------------------------------------------

    def _note_failure(self, owner: Caller | None, child: StdioChild) -> None:
        failures, _ = self._backoff.get(owner, (0, 0.0))
        now = time.monotonic()
        if child.started_at and now - child.started_at > self.backoff_max:
            failures = 0  # it ran for a good while: not a crash loop
        failures = min(failures + 1, _MAX_FAILURES)
        wait = min(self.backoff * (2 ** (failures - 1)), self.backoff_max)
        self._backoff[owner] = (failures, now + wait)

    async def _spawn(self, owner: Caller | None, *, modern: bool) -> StdioChild:
        """Start a child for ``owner`` (after its crash backoff), ready to serve."""
        entry = self._backoff.get(owner)
        if entry is not None and entry[1] > time.monotonic():
            await asyncio.sleep(entry[1] - time.monotonic())
        if self.on_spawn is not None:
            try:
                await self.on_spawn(self.command)
            except Exception as exc:
                raise UpstreamError(self._where(
                    f"the spawn could not be recorded ({type(exc).__name__}: "
                    f"{str(exc)[:200]})")) from exc
        child = StdioChild(self.mount, self.command, self.env, self.cwd, serves_modern=modern)
        try:
            await child.start()
            if modern:
                await self._settle_era(child)
        except BaseException as exc:
            if isinstance(exc, UpstreamError):
                self._note_failure(owner, child)
            await child.aclose()
            raise
        return child

    async def _settle_era(self, child: StdioChild) -> None:
        """Make a child fit to serve 2026-07-28 callers: as it is if it is modern, initialized
        (and translated from then on) if it is legacy."""
        if self._verdict is Verdict.MODERN:
            return
        if self._verdict is Verdict.LEGACY:
            try:
                await child.initialize(self.timeout)
            except UpstreamError:
                if self.protocol == "auto":
                    self._verdict = None  # probe the next one: the server may have changed
                raise
            return
        verdict = await child.probe(self.probe_timeout, self.timeout)
        if verdict is Verdict.INCOMPATIBLE:
            raise UpstreamError(self._where(
                f"its server/discover answer says it supports neither {MODERN} nor an "
                "earlier version the gateway speaks"))
        self._verdict = verdict
        log.info("stdio server of mount %s speaks the %s era", self.mount, verdict.value)

    async def _acquire(self, key: Hashable, owner: Caller | None, *, modern: bool) -> Slot:
        """The slot for ``key`` with a live child, marked busy (the caller must leave it)."""
        slot = self.pool.get(key)
        if slot is None:
            await self._close(self.pool.take_dead())
            slot = self.pool.get(key) or self.pool.reserve(key, owner)
        self.pool.enter(slot)
        try:
            async with slot.lock:
                if slot.closed:
                    raise UpstreamError(self._where(slot.failure or "it was closed"))
                if slot.child is not None and not slot.child.alive:
                    self._note_failure(owner, slot.child)
                    old, slot.child = slot.child, None
                    await old.aclose()
                if slot.child is None:
                    slot.child = await self._spawn(owner, modern=modern)
        except BaseException as exc:
            self.pool.leave(slot)
            if slot.child is None:
                self.pool.discard(slot, str(exc))
            raise
        return slot

    # -- exchanges --------------------------------------------------------------------------

    async def request(
        self, method: str, headers: Mapping[str, str], body: bytes | None,
        caller: Caller = ANONYMOUS,
    ) -> UpstreamResponse:
        if method in ("GET", "DELETE"):
            return await self._session_stream_or_end(method, headers, caller)
        try:
            message = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            return _plain(400, error_body(JsonRpcError.PARSE_ERROR, "Parse error"))
        try:
            if headers.get("mcp-protocol-version") == MODERN:
                return await self._modern(caller, message)
            return await self._legacy(caller, headers, message)
        except CapReached as cap:
            return _cap_answer(cap, message.get("id"))

    async def _next(self, child: StdioChild, exchange: Exchange) -> dict[str, Any]:
        """The next message of an exchange; an error answer if the child died."""
        try:
            message = await asyncio.wait_for(exchange.inbox.get(), self.timeout)
        except TimeoutError:
            raise UpstreamTimeout(self._where(
                f"did not answer within {self.timeout:g} s")) from None
        if message is None:
            exchange.answered = True
            return {"jsonrpc": "2.0", "id": exchange.original_id, "error": {
                "code": CHILD_EXITED, "message": "Upstream MCP server process exited"}}
        return message

    async def _answer(self, slot: Slot, child: StdioChild, exchange: Exchange, *,
                      modern: bool) -> UpstreamResponse:
        """JSON when the first message is the answer; otherwise an SSE stream ending with it.
        In 2026-07-28 the end of the stream before the answer cancels the request (the
        client went away); in both eras a timeout does."""
        finish = _Finish(self, slot, child, exchange, cancel=modern)
        try:
            first = await self._next(child, exchange)
        except BaseException:
            finish.cancel = True
            await finish.aclose()
            raise
        if "method" not in first:
            await finish.aclose()
            return _plain(200, _dumps(first))

        async def stream() -> AsyncIterator[bytes]:
            yield _sse(_dumps(first))
            while True:
                try:
                    message = await self._next(child, exchange)
                except UpstreamTimeout:
                    finish.cancel = True
                    raise
                yield _sse(_dumps(message))
                if "method" not in message:
                    return

        return UpstreamResponse(200, list(_SSE), stream(), closers=[finish])

    # -- 2026-07-28 -------------------------------------------------------------------------

    def _modern_key(self, caller: Caller) -> tuple[Hashable, Caller | None]:
        if self.isolation == "shared":
            return ("shared",), None
        return ("caller", caller), caller

    async def _modern(self, caller: Caller, message: dict[str, Any]) -> UpstreamResponse:
        key, owner = self._modern_key(caller)
        if "method" not in message or "id" not in message:
            # No client-to-server notifications in this era but a cancellation, and no
            # server-to-client requests to answer: only a caller's own cancellation passes.
            slot = self.pool.get(key)
            if (message.get("method") == "notifications/cancelled" and slot is not None
                    and slot.serves(caller) and slot.child is not None and slot.child.alive):
                await slot.child.forward_cancellation(caller, message)
            return _plain(202, b"")
        slot = await self._acquire(key, owner, modern=True)
        try:
            child = slot.child
            assert child is not None
            local = self._answer_locally(child, message)
            if local is not None:
                self.pool.leave(slot)
                return local
            exchange = await child.send(caller, message)
        except BaseException:
            self.pool.leave(slot)
            raise
        return await self._answer(slot, child, exchange, modern=True)

    def _answer_locally(self, child: StdioChild, message: dict[str, Any]
                        ) -> UpstreamResponse | None:
        """What the gateway answers for a legacy child: ``server/discover`` from its
        InitializeResult; ``subscriptions/listen`` is refused (it cannot be served), and so is
        ``initialize`` (not a 2026-07-28 method: the gateway did the child's handshake)."""
        if child.handshake is None:
            return None
        method = message.get("method")
        if method == "initialize":
            return _plain(400, error_body(
                UNSUPPORTED_PROTOCOL_VERSION,
                f"Unsupported protocol version: initialize is not part of {MODERN}",
                message.get("id"), {"supported": [MODERN]}))
        if method == "server/discover":
            return _plain(200, _dumps({"jsonrpc": "2.0", "id": message.get("id"),
                                       "result": discover_result(child.handshake)}))
        if method == "subscriptions/listen":
            return _plain(200, error_body(
                METHOD_NOT_FOUND, "Method not found: subscriptions/listen (the MCP server of "
                f"mount {self.mount} speaks 2025-11-25, which has no such streams)",
                message.get("id")))
        return None

    # -- 2025-11-25 and earlier -------------------------------------------------------------

    def _session(self, sid: str | None, caller: Caller) -> Slot | None:
        """The session's slot, only for the caller that opened it (invariant 2: the proxy's
        own check is not the only one)."""
        slot = self.pool.get(("session", sid)) if sid else None
        if slot is None or slot.closed or slot.owner != caller:
            return None
        return slot

    async def _live_session(self, sid: str | None, caller: Caller) -> Slot | None:
        slot = self._session(sid, caller)
        if slot is not None and (slot.child is None or not slot.child.alive):
            self.pool.discard(slot)
            await self._close([slot])
            return None
        return slot

    async def _session_stream_or_end(self, method: str, headers: Mapping[str, str],
                                     caller: Caller) -> UpstreamResponse:
        sid = headers.get("mcp-session-id")
        slot = await self._live_session(sid, caller)
        if slot is None or slot.child is None:
            return _not_found(sid)
        if method == "DELETE":
            self.pool.discard(slot)
            await self._close([slot])
            return _plain(200, b"")
        child = slot.child
        self.pool.enter(slot)
        finish = _Finish(self, slot, child, None, cancel=False)

        async def events() -> AsyncIterator[bytes]:
            yield b": stream open\n\n"
            while True:
                item = await child.unsolicited.get()
                if item is None:
                    return
                yield _sse(_dumps(item))

        return UpstreamResponse(200, list(_SSE), events(), closers=[finish])

    async def _legacy(self, caller: Caller, headers: Mapping[str, str],
                      message: dict[str, Any]) -> UpstreamResponse:
        if message.get("method") == "initialize":
            return await self._initialize(caller, message)
        sid = headers.get("mcp-session-id")
        slot = await self._live_session(sid, caller)
        if slot is None or slot.child is None:
            return _not_found(sid, message.get("id"))
        child = slot.child
        if "method" not in message or "id" not in message:
            # A notification, or the answer to a request of the session's own child.
            self.pool.enter(slot)
            try:
                if message.get("method") == "notifications/cancelled":
                    await child.forward_cancellation(caller, message)
                else:
                    await child.write(message)
            finally:
                self.pool.leave(slot)
            return _plain(202, b"")
        self.pool.enter(slot)
        try:
            exchange = await child.send(caller, message)
        except BaseException:
            self.pool.leave(slot)
            raise
        return await self._answer(slot, child, exchange, modern=False)

    async def _initialize(self, caller: Caller, message: dict[str, Any]) -> UpstreamResponse:
        request_id = message.get("id")
        params = message.get("params")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        if self.protocol == MODERN:
            return self._refuse_legacy(request_id, requested)
        sid = secrets.token_hex(16)
        slot = await self._acquire(("session", sid), caller, modern=False)
        child = slot.child
        assert child is not None
        try:
            exchange = await child.send(caller, message)
            try:
                answer = await self._next(child, exchange)
                while "method" in answer:  # nothing but the answer is expected before it
                    answer = await self._next(child, exchange)
            finally:
                await child.finish(exchange, cancel=False)
        except BaseException:
            self.pool.leave(slot)
            self.pool.discard(slot)
            await self._close([slot])
            raise
        self.pool.leave(slot)
        error = answer.get("error")
        if error is None:
            return _plain(200, _dumps(answer), [("mcp-session-id", sid)])
        self.pool.discard(slot)
        await self._close([slot])
        if isinstance(error, dict) and error.get("code") == UNSUPPORTED_PROTOCOL_VERSION:
            return self._refuse_legacy(request_id, requested)
        return _plain(200, _dumps(answer))

    def _refuse_legacy(self, request_id: object, requested: object) -> UpstreamResponse:
        code, err = modern_only_refusal(self.mount, requested)
        return _plain(400, error_body(code, err["message"], request_id, err["data"]))
