"""The gateway's HTTP upstream client alone: CPU per request of each candidate, same process.

Candidates (each behind the gateway's ``Upstream`` interface, request -> stream -> aclose):
  httpx           bastion.gateway.upstream_http.HttpUpstream as it is (httpx 0.28/httpcore 1.0)
  httpx+sniffio   the same with sniffio importable (httpcore imports it on every pool event;
                  without it each import fails after walking sys.path)
  httpx2          the same HttpUpstream class on httpx2/httpcore2 (already installed: the SDK
                  depends on it)
  raw             bench/experiments/raw_upstream.py, a pooled raw asyncio HTTP/1.1 client

A trivial upstream (raw asyncio, fixed answers: JSON with Content-Length, or a chunked SSE
stream like the SDK's 2025-11-25 answers) runs in its own process on CPU 0; the candidates run
here on CPU 1. Candidates are interleaved in short batches, round after round, so hypervisor
steal and other load hit them alike; each figure is the median over rounds of CPU time
(this process, ``time.process_time``) per request. Loopback only, bounded.

    .venv/bin/python bench/upstream_client.py [--rounds 7] [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench" / "experiments"))

import bastion.gateway.upstream_http as upstream_http  # noqa: E402
from bastion.gateway.upstream_http import HttpUpstream  # noqa: E402

RESULT = (b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"text":"c0-1","type":"text"}],'
          b'"isError":false}}')
JSON_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
               + str(len(RESULT)).encode() + b"\r\n\r\n" + RESULT)
EVENT = b"event: message\r\ndata: " + RESULT + b"\r\n\r\n"
SSE_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache"
              b"\r\nmcp-session-id: abc\r\ntransfer-encoding: chunked\r\n\r\n"
              + b"%x\r\n" % len(EVENT) + EVENT + b"\r\n0\r\n\r\n")
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo",
           "accept-encoding": "identity"}
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "c0-1"}}}).encode()


def serve(port: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                writer.write(SSE_ANSWER if b" /sse " in head[:64] else JSON_ANSWER)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        async with server:
            await asyncio.sleep(3600)  # ended by the parent

    asyncio.run(main())


def make(kind: str, url: str) -> Any:
    kw: dict[str, Any] = {"credentials": {"authorization": "Bearer upstream-secret"},
                          "connect_timeout": 5, "read_timeout": 30}
    if kind == "raw":
        from raw_upstream import RawHttpUpstream

        return RawHttpUpstream(url, **kw)
    if kind == "httpx2":
        import httpx2

        original = upstream_http.httpx
        upstream_http.httpx = httpx2  # type: ignore[assignment]
        try:
            return HttpUpstream(url, **kw)
        finally:
            upstream_http.httpx = original
    return HttpUpstream(url, **kw)


def sniffio_module() -> Any:
    path = ROOT / "bench" / ".cache" / "sniffio" / "sniffio" / "__init__.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("sniffio", path,
                                                  submodule_search_locations=[str(path.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sniffio"] = module
    spec.loader.exec_module(module)
    return module


async def batch(client: Any, n: int, concurrency: int) -> float:
    """CPU seconds per request for ``n`` requests from ``concurrency`` workers."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            resp = await client.request("POST", HEADERS, BODY)
            got = b""
            async for chunk in resp.stream:
                got += chunk
            await resp.aclose()
            if resp.status != 200 or b"c0-1" not in got:
                raise RuntimeError(f"bad answer {resp.status} {got[:100]!r}")

    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - t0) / n


async def run(args: argparse.Namespace, base: str) -> dict[str, Any]:
    sniffio = sniffio_module()
    sys.modules.pop("sniffio", None)
    kinds = ["httpx", "httpx+sniffio", "httpx2", "raw"]
    if sniffio is None:
        kinds.remove("httpx+sniffio")
        print("(sniffio not in bench/.cache: run bash bench/setup.sh for httpx+sniffio)")
    out: dict[str, Any] = {}
    for path in ("json", "sse"):
        for conc in args.concurrency:
            url = f"{base}/{path}"
            clients = {k: make(k, url) for k in kinds}
            samples: dict[str, list[float]] = {k: [] for k in kinds}
            for k, c in clients.items():  # warm pools and imports
                if k == "httpx+sniffio":
                    sys.modules["sniffio"] = sniffio
                await batch(c, max(conc * 2, 20), conc)
                sys.modules.pop("sniffio", None)
            for r in range(args.rounds):
                order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
                for k in order:
                    if k == "httpx+sniffio":
                        sys.modules["sniffio"] = sniffio
                    samples[k].append(await batch(clients[k], args.requests, conc))
                    sys.modules.pop("sniffio", None)
            for c in clients.values():
                await c.aclose()
            base_us = statistics.median(samples["httpx"]) * 1e6
            for k in kinds:
                us = statistics.median(samples[k]) * 1e6
                out[f"{path} c={conc} {k}"] = {"cpu_us_per_request": round(us, 1),
                                               "vs_httpx": round(us / base_us, 3)}
                print(f"{path:5} c={conc:<3} {k:14} {us:8.1f} µs CPU/request  "
                      f"{us / base_us:5.2f}x httpx", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=400, help="per batch")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    proc.start()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            break
        time.sleep(0.1)
    load0 = os.getloadavg()
    try:
        rows = asyncio.run(run(args, f"http://127.0.0.1:{port}"))
    finally:
        proc.terminate()
        proc.join(5)
    result = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": load0,
                          "loadavg_at_end": os.getloadavg()}, "rows": rows}
    print(f"load average: {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"upstream_client-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
