"""One stdio MCP server process: spawn, newline-delimited JSON-RPC both ways, shutdown.

Each request written to it is registered in its ``Routes`` (child-side ids and progress tokens,
mapped back on the way out). What the child sends that no exchange claims goes to the
``unsolicited`` queue when the child serves one legacy session (its GET stream), and is dropped
when it serves 2026-07-28 callers, who have no such stream; a request from the child to
2026-07-28 callers is answered by the gateway with an error (that era has none).

The child's environment holds only what the configuration names (RS-21); its stderr goes to
the log. It runs in its own process group, so shutdown reaches what it started too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.gateway.stdio_eras import (
    Verdict,
    discover_probe,
    handshake_result,
    initialize_request,
    initialized_notification,
    probe_verdict,
    refusal_of_server_request,
    to_legacy,
    to_modern,
)
from bastion.gateway.stdio_routes import Exchange, Routes, cancelled
from bastion.gateway.upstream import Caller, UpstreamError, UpstreamTimeout

__all__ = ["GATEWAY", "StdioChild", "base_environment", "missing_program"]

log = logging.getLogger("bastion.upstream")

MAX_LINE = 16 * 1024 * 1024
MAX_UNSOLICITED = 1024
_BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT")
# Whom the gateway's own exchanges (probe, handshake) are for: no token yields this subject.
GATEWAY: Caller = ("", "\x00gateway", "")
_STDIN_GRACE = 2.0  # seconds to exit after stdin closes, before SIGTERM
_TERM_GRACE = 3.0  # seconds to exit after SIGTERM, before SIGKILL


def base_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in _BASE_ENV if k in os.environ}


def missing_program(command: Sequence[str], env: Mapping[str, str],
                    cwd: Path | None) -> str | None:
    """Why ``command`` cannot be started, or None: its program must be an executable file,
    named by a path or found on the child's own ``PATH``."""
    if cwd is not None and not cwd.is_dir():
        return f"working directory does not exist: {cwd}"
    program = command[0]
    if os.sep in program:
        path = Path(program) if os.path.isabs(program) or cwd is None else cwd / program
        if not path.is_file():
            return f"command not found: {program}"
        if not os.access(path, os.X_OK):
            return f"command is not executable: {program}"
        return None
    if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return f"command not found on the PATH of the server: {program}"
    return None


def _dumps(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class StdioChild:
    """One child process speaking newline-delimited JSON-RPC on stdin/stdout."""

    def __init__(self, mount: str, command: Sequence[str], env: Mapping[str, str],
                 cwd: Path | None, *, serves_modern: bool) -> None:
        self.mount = mount
        self.command = tuple(command)
        self.env = dict(env)
        self.cwd = cwd
        # Serves 2026-07-28 callers (else: one legacy session, whose client speaks for it).
        self.serves_modern = serves_modern
        # The InitializeResult, once the gateway has initialized a legacy child itself for
        # 2026-07-28 callers: its requests and results are then translated.
        self.handshake: dict[str, Any] | None = None
        self.routes = Routes()
        self.unsolicited: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(MAX_UNSOLICITED)
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self.exited = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._replies: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        log.info("spawning stdio upstream for mount %s: %s", self.mount,
                 shlex.join(self.command))
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self.env, cwd=self.cwd,
                limit=MAX_LINE, start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise UpstreamError(self._where(f"command not found: {self.command[0]}")) from exc
        except PermissionError as exc:
            raise UpstreamError(self._where(
                f"command is not executable: {self.command[0]}")) from exc
        except OSError as exc:
            raise UpstreamError(self._where(f"cannot be started: {exc.strerror}")) from exc
        self.started_at = time.monotonic()
        self._tasks = [asyncio.create_task(self._read_stdout()),
                       asyncio.create_task(self._read_stderr())]

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    @property
    def translates(self) -> bool:
        return self.handshake is not None

    def exit_cause(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        if code is None:
            return "closed its output"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"

    def _where(self, cause: str) -> str:
        return f"stdio server of mount {self.mount}: {cause}"

    async def _ended(self) -> str:
        """Why the child is gone, once its exit status is known (it closed its output first)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), _STDIN_GRACE)
        return self.exit_cause()

    async def aclose(self) -> None:
        """Shut down as 2026-07-28 basic/transports/stdio.mdx says: close its input, wait,
        then SIGTERM, then SIGKILL (to its process group while it lives)."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), _STDIN_GRACE)
            except TimeoutError:
                self._signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), _TERM_GRACE)
                except TimeoutError:
                    self._signal(signal.SIGKILL)
                    await proc.wait()
        for t in [*self._tasks, *self._replies]:
            t.cancel()
        for t in [*self._tasks, *self._replies]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def _signal(self, sig: signal.Signals) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    # -- reading ----------------------------------------------------------------------------

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
            for exchange in self.routes.exchanges():
                exchange.inbox.put_nowait(None)
            with contextlib.suppress(asyncio.QueueFull):
                self.unsolicited.put_nowait(None)
            with contextlib.suppress(ProcessLookupError):
                if self.proc.returncode is None and not self.proc.stdout.at_eof():
                    self.proc.kill()  # it wrote what it must not: it is not our peer any more
            await self.proc.wait()
            log.warning("stdio upstream of mount %s %s", self.mount, self.exit_cause())

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            log.warning("stdio upstream %s wrote a line that is not JSON", self.mount)
            return
        if not isinstance(message, dict):
            return
        exchange = self.routes.inbound(message)
        if exchange is not None:
            exchange.deliver(to_modern(message, exchange.method) if self.translates
                             else message)
            return
        is_request = "method" in message and "id" in message
        if self.serves_modern:
            if is_request:
                self._reply(refusal_of_server_request(message))
            return
        pending = self.routes.exchanges()
        if is_request and len(pending) == 1:
            # A server-to-client request while exactly one call of the session is in flight
            # belongs to it (the child serves one session: nobody else's).
            pending[0].deliver(message)
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.unsolicited.put_nowait(message)

    def _reply(self, message: dict[str, Any]) -> None:
        task = asyncio.create_task(self._write_quietly(message))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _write_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(UpstreamError):
            await self.write(message)

    # -- writing ----------------------------------------------------------------------------

    async def write(self, message: Mapping[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise UpstreamError(self._where("not started"))
        if not self.alive:
            raise UpstreamError(self._where(await self._ended()))
        async with self._write_lock:
            try:
                self.proc.stdin.write(_dumps(message) + b"\n")
                await self.proc.stdin.drain()
            except (ConnectionError, BrokenPipeError) as exc:
                raise UpstreamError(self._where(f"closed its input ({exc})")) from exc

    async def send(self, caller: Caller, message: dict[str, Any]) -> Exchange:
        """Write a request for ``caller``; its answer and notifications come to the
        exchange's inbox (None there: the child exited)."""
        exchange, out = self.routes.open(caller, message)
        try:
            await self.write(to_legacy(out) if self.translates else out)
        except BaseException:
            self.routes.close(exchange)
            raise
        return exchange

    async def finish(self, exchange: Exchange, *, cancel: bool, reason: str = "") -> None:
        """Forget an exchange; if it is unanswered and ``cancel``, tell the child to stop."""
        self.routes.close(exchange)
        if cancel and not exchange.answered and self.alive:
            with contextlib.suppress(UpstreamError):
                await self.write(cancelled(exchange.child_id, reason or None))

    async def forward_cancellation(self, caller: Caller, message: dict[str, Any]) -> int:
        """Pass on a caller's ``notifications/cancelled`` for its own requests only; how many
        were passed on."""
        out = self.routes.cancellation(caller, message)
        for notification in out:
            await self.write(notification)
        return len(out)

    # -- era --------------------------------------------------------------------------------

    async def _ask(self, message: dict[str, Any], timeout: float,
                   what: str) -> dict[str, Any]:
        exchange = await self.send(GATEWAY, message)
        try:
            answer = await asyncio.wait_for(self._answer_of(exchange), timeout)
        except TimeoutError:
            raise UpstreamTimeout(self._where(
                f"did not answer {what} within {timeout:g} s")) from None
        finally:
            await self.finish(exchange, cancel=False)
        return answer

    async def _answer_of(self, exchange: Exchange) -> dict[str, Any]:
        while True:
            message = await exchange.inbox.get()
            if message is None:
                raise UpstreamError(self._where(await self._ended()))
            if "method" not in message:
                return message

    async def initialize(self, timeout: float) -> None:
        """The legacy handshake, done by the gateway for 2026-07-28 callers."""
        answer = await self._ask(initialize_request(0), timeout, "initialize")
        try:
            result = handshake_result(answer)
        except ValueError as exc:
            raise UpstreamError(self._where(str(exc))) from None
        await self.write(initialized_notification())
        self.handshake = result

    async def probe(self, probe_timeout: float, timeout: float) -> Verdict:
        """Find the child's era (stdio.mdx, Backward Compatibility); a legacy child is left
        initialized. An answer to the probe that comes after its timeout still counts."""
        exchange = await self.send(GATEWAY, discover_probe(0))
        try:
            try:
                answer = await asyncio.wait_for(self._answer_of(exchange), probe_timeout)
            except TimeoutError:
                answer = None
            if answer is not None:
                verdict = probe_verdict(answer)
                if verdict is not Verdict.LEGACY:
                    return verdict
            try:
                await self.initialize(timeout)
            except UpstreamError:
                late = _late_answer(exchange)
                if late is not None and probe_verdict(late) is Verdict.MODERN:
                    return Verdict.MODERN
                raise
            return Verdict.LEGACY
        finally:
            await self.finish(exchange, cancel=False)


def _late_answer(exchange: Exchange) -> dict[str, Any] | None:
    while not exchange.inbox.empty():
        message = exchange.inbox.get_nowait()
        if message is not None and "method" not in message:
            return message
    return None
