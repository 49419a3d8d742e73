"""A stdio MCP server, spawned and bridged by the gateway.

- 2025-11-25 and earlier: each client session gets its own child process (spawned on
  ``initialize``), so server-to-client messages have exactly one place to go and no two
  principals ever share a server process.
- 2026-07-28: requests are self-contained, so one shared child per mount answers them, with
  request ids rewritten so concurrent callers never see each other's answers.

A child that dies answers every in-flight call with a JSON-RPC error (never a hang); the shared
child is restarted on the next request after a backoff that doubles up to a ceiling. The
child's environment holds only what the configuration names (RS-21); its stderr goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import shlex
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.gateway.upstream import (
    ANONYMOUS,
    Caller,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from bastion.mcp.eras import MODERN
from bastion.mcp.jsonrpc import error_body

__all__ = ["StdioChild", "StdioUpstream", "base_environment"]

log = logging.getLogger("bastion.upstream")

CHILD_EXITED = -32001
MAX_LINE = 16 * 1024 * 1024
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT")
_JSON = [("content-type", "application/json")]
_SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


def base_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in _BASE_ENV if k in os.environ}


def _dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _sse(message: bytes) -> bytes:
    return b"event: message\ndata: " + message + b"\n\n"


class StdioChild:
    """One child process speaking newline-delimited JSON-RPC on stdin/stdout."""

    def __init__(self, mount: str, command: Sequence[str], env: Mapping[str, str],
                 cwd: Path | None) -> None:
        self.mount = mount
        self.command = tuple(command)
        self.env = dict(env)
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        # child-side request id -> queue receiving messages for that caller
        self._pending: dict[int, asyncio.Queue[bytes | None]] = {}
        self._original: dict[int, Any] = {}
        self._progress: dict[Any, int] = {}
        self.unsolicited: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1024)
        self._tasks: list[asyncio.Task[None]] = []
        self.exited = asyncio.Event()
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        log.info("spawning stdio upstream for mount %s: %s", self.mount,
                 shlex.join(self.command))
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
            limit=MAX_LINE, start_new_session=True,
        )
        self._tasks = [asyncio.create_task(self._read_stdout()),
                       asyncio.create_task(self._read_stderr())]

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with contextlib.suppress(Exception):
            async for line in self.proc.stderr:
                log.info("[%s stderr] %s", self.mount,
                         line.decode("utf-8", "replace").rstrip()[:2000])

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while True:
                try:
                    line = await self.proc.stdout.readline()
                except ValueError:
                    log.warning("stdio upstream %s sent an over-long line", self.mount)
                    break
                if not line:
                    break
                if line.strip():
                    self._dispatch(line)
        finally:
            self.exited.set()
            for queue in self._pending.values():
                queue.put_nowait(None)
            with contextlib.suppress(asyncio.QueueFull):
                self.unsolicited.put_nowait(None)
            code = await self.proc.wait()
            log.warning("stdio upstream of mount %s exited with status %s", self.mount, code)

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("stdio upstream %s wrote a line that is not JSON", self.mount)
            return
        if not isinstance(message, dict):
            return
        if "method" not in message and "id" in message:
            child_id = message.get("id")
            queue = self._pending.get(child_id) if isinstance(child_id, int) else None
            if queue is not None and isinstance(child_id, int):
                message["id"] = self._original.get(child_id)
                queue.put_nowait(_dumps(message))
            return
        if message.get("method") == "notifications/progress":
            params = message.get("params")
            token = params.get("progressToken") if isinstance(params, dict) else None
            owner = self._progress.get(token)
            if owner is not None and owner in self._pending:
                self._pending[owner].put_nowait(_dumps(message))
                return
        if len(self._pending) == 1 and "id" in message:
            # A server-to-client request while exactly one call is in flight belongs to it.
            next(iter(self._pending.values())).put_nowait(_dumps(message))
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.unsolicited.put_nowait(_dumps(message))

    async def write(self, message: Mapping[str, Any]) -> None:
        if not self.alive or self.proc is None or self.proc.stdin is None:
            raise UpstreamError("the stdio upstream is not running")
        async with self._write_lock:
            try:
                self.proc.stdin.write(_dumps(message) + b"\n")
                await self.proc.stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                raise UpstreamError("the stdio upstream closed its input") from exc

    async def call(self, message: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Send a request; yield messages for it, ending with its response (or an error)."""
        child_id = next(self._ids)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._pending[child_id] = queue
        self._original[child_id] = message.get("id")
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            self._progress[token] = child_id
        try:
            await self.write({**message, "id": child_id})
            while True:
                item = await queue.get()
                if item is None:
                    yield error_body(CHILD_EXITED, "Upstream MCP server process exited",
                                     message.get("id"))
                    return
                yield item
                if b'"method"' not in item[:64] and _is_response(item):
                    return
        finally:
            self._pending.pop(child_id, None)
            self._original.pop(child_id, None)
            if token is not None:
                self._progress.pop(token, None)

    async def aclose(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


def _is_response(item: bytes) -> bool:
    try:
        message = json.loads(item)
    except ValueError:
        return False
    return isinstance(message, dict) and "method" not in message


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
        max_children: int = 64,
        timeout: float = 120.0,
    ) -> None:
        self.timeout = timeout
        self.mount = mount
        self.command = tuple(command)
        self.env = {**base_environment(), **env}
        self.cwd = cwd
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_children = max_children
        # Called with the exact command before each spawn (the audit trail records it; a
        # failure to record refuses the spawn).
        self.on_spawn: Callable[[tuple[str, ...]], Awaitable[None]] | None = None
        self._shared: StdioChild | None = None
        self._sessions: dict[str, StdioChild] = {}
        self._failures = 0
        self._next_start = 0.0
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        children = list(self._sessions.values())
        if self._shared is not None:
            children.append(self._shared)
        self._sessions.clear()
        self._shared = None
        for child in children:
            await child.aclose()

    async def _spawn(self) -> StdioChild:
        """Start a child, waiting out the crash backoff first."""
        delay = self._next_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if self.on_spawn is not None:
            try:
                await self.on_spawn(self.command)
            except Exception as exc:
                raise UpstreamError("the stdio spawn could not be recorded") from exc
        child = StdioChild(self.mount, self.command, self.env, self.cwd)
        try:
            await child.start()
        except OSError as exc:
            self._note_failure()
            raise UpstreamError(f"the stdio upstream cannot be started: {exc.strerror}") from exc
        return child

    def _note_failure(self) -> None:
        self._failures += 1
        wait = min(self.backoff * (2 ** (self._failures - 1)), self.backoff_max)
        self._next_start = time.monotonic() + wait

    async def _shared_child(self) -> StdioChild:
        async with self._lock:
            if self._shared is not None and not self._shared.alive:
                self._note_failure()
                await self._shared.aclose()
                self._shared = None
            if self._shared is None:
                self._shared = await self._spawn()
            return self._shared

    async def request(
        self, method: str, headers: Mapping[str, str], body: bytes | None,
        caller: Caller = ANONYMOUS,
    ) -> UpstreamResponse:
        sid = headers.get("mcp-session-id")
        if method == "DELETE":
            child = self._sessions.pop(sid, None) if sid else None
            if child is None:
                return _plain(404, error_body(-32600, "Session not found"))
            await child.aclose()
            return _plain(200, b"")
        if method == "GET":
            child = self._sessions.get(sid) if sid else None
            if child is None:
                return _plain(404 if sid else 400, error_body(-32600, "Session not found"))
            return UpstreamResponse(200, list(_SSE), _unsolicited(child))
        message = json.loads(body or b"{}")
        modern = headers.get("mcp-protocol-version") == MODERN
        new_session: str | None = None
        if modern:
            child = await self._shared_child()
        elif message.get("method") == "initialize":
            if len(self._sessions) >= self.max_children:
                oldest = next(iter(self._sessions))
                await self._sessions.pop(oldest).aclose()
            child = await self._spawn()
            new_session = secrets.token_hex(16)
            self._sessions[new_session] = child
        else:
            found = self._sessions.get(sid) if sid else None
            if found is None:
                return _plain(404 if sid else 400, error_body(-32600, "Session not found"
                                                              if sid else "Missing session ID"))
            child = found
            if not child.alive:
                self._sessions.pop(sid or "", None)
                return _plain(404, error_body(-32600, "Session ended: the server exited"))
        extra = [("mcp-session-id", new_session)] if new_session else []
        if "method" not in message or "id" not in message:
            # A notification, or a response to a server-to-client request.
            await child.write(message)
            return _plain(202, b"", extra)
        return await _answer(child.call(message), extra, self.timeout)


def _plain(
    status: int, body: bytes, extra: list[tuple[str, str]] | None = None
) -> UpstreamResponse:
    async def one() -> AsyncIterator[bytes]:
        if body:
            yield body

    headers = list(_JSON) if body else []
    return UpstreamResponse(status, headers + (extra or []), one())


async def _answer(
    messages: AsyncGenerator[bytes, None], extra: list[tuple[str, str]], timeout: float
) -> UpstreamResponse:
    """JSON when the first message is the answer; otherwise an SSE stream ending with it."""
    try:
        first = await asyncio.wait_for(anext(messages), timeout)
    except TimeoutError:
        await messages.aclose()
        raise UpstreamTimeout("the stdio upstream did not answer in time") from None
    if _is_response(first):
        await messages.aclose()
        return _plain(200, first, extra)

    async def stream() -> AsyncIterator[bytes]:
        yield _sse(first)
        while True:
            try:
                item = await asyncio.wait_for(anext(messages), timeout)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await messages.aclose()
                raise UpstreamTimeout("the stdio upstream stopped answering") from None
            yield _sse(item)

    return UpstreamResponse(200, list(_SSE) + extra, stream())


async def _unsolicited(child: StdioChild) -> AsyncIterator[bytes]:
    yield b": stream open\n\n"
    while True:
        item = await child.unsolicited.get()
        if item is None:
            return
        yield _sse(item)
