"""A lean MCP load generator: raw asyncio HTTP/1.1, keep-alive, one full MCP session per client.

Why not httpx: an httpx-based generator cost 1.2-1.7 ms of CPU per call on this machine kind
and ended up measuring itself; this one costs ~0.1 ms (it reports its own CPU per call, so
that claim is checked on every run).

Per client, one keep-alive connection and:
- 2025-11-25: ``initialize``, ``notifications/initialized`` (with ``Mcp-Session-Id``), then
  ``tools/call echo`` in a loop, then ``DELETE`` of the session;
- 2026-07-28: stateless ``tools/call echo`` POSTs with ``MCP-Protocol-Version``,
  ``Mcp-Method``, ``Mcp-Name`` and ``_meta``.

Answers may be JSON (Content-Length or chunked) or an SSE stream, read until the JSON-RPC
response event for the request's id arrives. Every answer is checked: status 200, the id, and
the echoed text (unique per call) round-tripped. Failures are counted, never retried.

Bounded: each run stops at its deadline or after ``max_calls``; loopback targets only.

    .venv/bin/python bench/loadgen.py http://127.0.0.1:9001/mcp --era 2026-07-28 -c 1 8 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoadResult", "Target", "run_load", "summarize"]

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "bastion-bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}
MAX_RESPONSE = 8 * 1024 * 1024
IO_TIMEOUT = 30.0
# Session set-up is not measured, and a stdio mount spawns one child (a Python process that
# imports the SDK, ~1 s of CPU) per 2025-11-25 session: 32 at once on one core need minutes.
SETUP_TIMEOUT = 180.0


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class Target:
    url: str
    token: str | None = None

    @property
    def parts(self) -> tuple[str, int, str]:
        u = urlsplit(self.url)
        host = u.hostname or ""
        if u.scheme != "http" or not _is_loopback(host):
            raise SystemExit(f"loopback http targets only, not {self.url}")
        return host, u.port or 80, u.path or "/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes  # JSON: the body; SSE: the data of the response event


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are strictly sequential."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, head: bytes, body: bytes, want_id: object,
                      timeout: float = IO_TIMEOUT) -> Reply:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(head + body)
        reply = await asyncio.wait_for(self._read(want_id), timeout)
        if reply.headers.get("connection", "").lower() == "close":
            await self.close()
        return reply

    async def _read(self, want_id: object) -> Reply:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        sse = headers.get("content-type", "").startswith("text/event-stream")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            if sse:
                return Reply(status, headers, await self._sse_chunked(want_id))
            return Reply(status, headers, await self._chunked_all())
        length = int(headers.get("content-length", "0"))
        if length > MAX_RESPONSE:
            raise CheckFailed("response too large")
        body = await self.reader.readexactly(length) if length else b""
        if sse:
            body = _response_event(body, want_id) or b""
        return Reply(status, headers, body)

    async def _chunk(self) -> bytes:
        assert self.reader is not None
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size > MAX_RESPONSE:
            raise CheckFailed("chunk too large")
        data = await self.reader.readexactly(size + 2)
        if size == 0:
            # Trailers (none expected) end with an empty line: "0\r\n\r\n" was consumed.
            return b""
        return data[:-2]

    async def _chunked_all(self) -> bytes:
        parts = []
        while chunk := await self._chunk():
            parts.append(chunk)
        return b"".join(parts)

    async def _sse_chunked(self, want_id: object) -> bytes:
        """Read SSE events until the response for ``want_id``; then drain to the stream's end
        so the connection can be reused (the server ends a POST's stream after the response)."""
        buf = b""
        found: bytes | None = None
        while True:
            chunk = await self._chunk()
            if not chunk:
                return found or b""
            if found is not None:
                continue
            buf += chunk
            buf = buf.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                data = _event_data(event)
                if data is not None and _is_response_for(data, want_id):
                    found = data


def _event_data(event: bytes) -> bytes | None:
    lines = [ln[5:].lstrip(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


def _is_response_for(data: bytes, want_id: object) -> bool:
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and "method" not in message and message.get("id") == want_id


def _response_event(body: bytes, want_id: object) -> bytes | None:
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = _event_data(event)
        if data is not None and _is_response_for(data, want_id):
            return data
    return None


class McpClient:
    """One MCP session (or, in 2026-07-28, a stream of stateless requests) on one connection."""

    def __init__(self, target: Target, era: str, client_no: int) -> None:
        self.host, self.port, self.path = target.parts
        self.era = era
        self.client_no = client_no
        self.conn = Connection(self.host, self.port)
        self.session: str | None = None
        self.next_id = 1
        base = [f"Host: {self.host}:{self.port}", "Content-Type: application/json",
                "Accept: application/json, text/event-stream"]
        if target.token:
            base.append(f"Authorization: Bearer {target.token}")
        self.base_headers = base

    def _head(self, method: str, length: int, extra: list[str]) -> bytes:
        lines = [f"{method} {self.path} HTTP/1.1", *self.base_headers, *extra]
        if self.session is not None:
            lines.append(f"Mcp-Session-Id: {self.session}")
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def post(self, message: dict[str, Any], extra: list[str],
                   timeout: float = IO_TIMEOUT) -> Reply:
        body = json.dumps(message, separators=(",", ":")).encode()
        return await self.conn.request(self._head("POST", len(body), extra), body,
                                       message.get("id"), timeout)

    async def start(self) -> None:
        await self.conn.open()
        if self.era == MODERN:
            return
        rid = self._id()
        reply = await self.post({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {},
            "clientInfo": {"name": "bastion-bench", "version": "1"}}}, [], SETUP_TIMEOUT)
        if reply.status != 200 or not reply.body:
            raise CheckFailed(f"initialize answered {reply.status}")
        result = json.loads(reply.body).get("result")
        if not isinstance(result, dict) or "protocolVersion" not in result:
            raise CheckFailed("initialize gave no result")
        self.session = reply.headers.get("mcp-session-id")
        if self.session is None:
            raise CheckFailed("initialize gave no Mcp-Session-Id")
        extra = [f"MCP-Protocol-Version: {result['protocolVersion']}"]
        self.base_headers.extend(extra)
        reply = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, [],
                                SETUP_TIMEOUT)
        if reply.status != 202:
            raise CheckFailed(f"notifications/initialized answered {reply.status}")

    def _id(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    async def echo(self) -> None:
        rid = self._id()
        text = f"c{self.client_no}-{rid}"
        params: dict[str, Any] = {"name": "echo", "arguments": {"text": text}}
        extra: list[str] = []
        if self.era == MODERN:
            params["_meta"] = META
            extra = [f"MCP-Protocol-Version: {MODERN}", "Mcp-Method: tools/call",
                     "Mcp-Name: echo"]
        reply = await self.post({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                 "params": params}, extra)
        if reply.status != 200:
            raise CheckFailed(f"tools/call answered {reply.status}: {reply.body[:200]!r}")
        message = json.loads(reply.body)
        if message.get("id") != rid:
            raise CheckFailed("answer for another id")
        result = message.get("result")
        content = result.get("content") if isinstance(result, dict) else None
        if not content or content[0].get("text") != text or result.get("isError"):
            raise CheckFailed(f"echo did not round-trip: {reply.body[:200]!r}")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.session is not None and self.conn.writer is not None:
                head = self._head("DELETE", 0, [])
                await asyncio.wait_for(self.conn.request(head, b"", None), 5)
        await self.conn.close()


@dataclass
class LoadResult:
    era: str
    concurrency: int
    seconds: float
    calls: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    client_cpu_seconds: float = 0.0


def _note(result: LoadResult, exc: BaseException) -> None:
    result.errors += 1
    if len(result.error_samples) < 5:
        result.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])


async def run_load(
    target: Target,
    *,
    era: str,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
    max_calls: int = 1_000_000,
    on_window: Callable[[str], None] | None = None,
) -> LoadResult:
    """Open ``concurrency`` sessions, warm up, then measure for ``seconds``.

    ``on_window("start"|"end")`` is called at the edges of the measured window (the caller
    samples server CPU there). Only calls that start and end inside the window count.
    """
    result = LoadResult(era, concurrency, seconds)
    clients = [McpClient(target, era, i) for i in range(concurrency)]
    started = await asyncio.gather(*(c.start() for c in clients), return_exceptions=True)
    live = []
    for c, outcome in zip(clients, started, strict=True):
        if isinstance(outcome, BaseException):
            _note(result, outcome)
            await c.conn.close()
        else:
            live.append(c)
    window = {"open": False, "closed": False}
    full = asyncio.Event()  # max_calls reached
    hard_stop = time.monotonic() + warmup + seconds + IO_TIMEOUT

    async def loop(client: McpClient) -> None:
        while not window["closed"] and time.monotonic() < hard_stop:
            t0 = time.perf_counter()
            counted = window["open"]
            try:
                await client.echo()
            except (CheckFailed, OSError, ValueError, asyncio.IncompleteReadError,
                    TimeoutError) as exc:
                if counted and not window["closed"]:
                    _note(result, exc)
                await client.conn.close()
                if isinstance(exc, CheckFailed | ValueError):
                    await asyncio.sleep(0.01)
                continue
            if counted and not window["closed"]:
                result.latencies.append(time.perf_counter() - t0)
                if len(result.latencies) >= max_calls:
                    window["closed"] = True
                    full.set()

    tasks = [asyncio.create_task(loop(c)) for c in live]
    if live:
        await asyncio.sleep(warmup)
        if on_window:
            on_window("start")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        window["open"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), seconds)
        window["closed"] = True
        result.seconds = time.perf_counter() - wall0
        result.client_cpu_seconds = time.process_time() - cpu0
        if on_window:
            on_window("end")
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(c.stop() for c in live), return_exceptions=True)
    result.calls = len(result.latencies)
    return result


def summarize(r: LoadResult) -> dict[str, Any]:
    lat = sorted(r.latencies)
    return {
        "era": r.era, "concurrency": r.concurrency, "seconds": round(r.seconds, 3),
        "calls": r.calls, "errors": r.errors, "error_samples": r.error_samples,
        "calls_per_s": r.calls / r.seconds if r.seconds else 0.0,
        "p50_ms": statistics.median(lat) * 1000 if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
        "loadgen_cpu_ms_per_call": r.client_cpu_seconds / r.calls * 1000 if r.calls else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--token")
    parser.add_argument("--era", choices=[LEGACY, MODERN], default=MODERN)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-calls", type=int, default=1_000_000)
    parser.add_argument("--cpu", type=int, help="pin the load generator to this CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    target = Target(args.url, args.token)
    target.parts  # noqa: B018  (validates: loopback only)
    print(f"{'conc':>5}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'gen cpu ms':>12}")
    for c in args.concurrency:
        s = summarize(asyncio.run(run_load(target, era=args.era, concurrency=c,
                                           seconds=args.seconds, max_calls=args.max_calls)))
        print(f"{c:>5}{s['calls_per_s']:>10.0f}{s['p50_ms'] or 0:>9.2f}{s['p99_ms'] or 0:>9.2f}"
              f"{s['errors']:>8}{s['loadgen_cpu_ms_per_call'] or 0:>12.3f}")
        for e in s["error_samples"]:
            print("   ", e, file=sys.stderr)


if __name__ == "__main__":
    main()
