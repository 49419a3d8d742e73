"""Token endpoint throughput: code exchange and refresh rotation, in tokens per second.

Baseline, same server and same client in the same run: GET of the AS metadata document (an
endpoint that does no storage and no signing), so the ratios show what PKCE checks, storage
(atomic code redemption, refresh rotation) and ES256 signing cost on top of the HTTP path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_results  # noqa: E402

from bastion.config.load import parse_config  # noqa: E402
from bastion.storage import open_store  # noqa: E402
from bastion.storage.base import AuthorizationCode, hash_secret  # noqa: E402

REDIRECT = "http://127.0.0.1:9/callback"
CLIENT = "bench-client"


def config_for(port: int, data: Path) -> Any:
    return parse_config({
        "data_dir": str(data), "server": {"port": port},
        "authorization_server": {"clients": [{"client_id": CLIENT, "redirect_uris": [REDIRECT],
                                              "token_endpoint_auth_method": "none"}]},
        "mounts": [{"name": "demo", "path": "/mcp", "scopes": ["demo:read"],
                    "upstream": {"url": "http://127.0.0.1:9/mcp"}}],
    }, source="bench")


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})


def run_server(port: int, data: str) -> None:
    pin(0)
    import uvicorn

    from bastion.runtime import build_runtime

    async def main() -> None:
        runtime = await build_runtime(config_for(port, Path(data)), source="bench")
        server = uvicorn.Server(uvicorn.Config(runtime.app, host="127.0.0.1", port=port,
                                               log_level="error", lifespan="on"))
        await server.serve()

    asyncio.run(main())


async def make_codes(data: Path, resource: str, n: int) -> list[tuple[str, str]]:
    store = await open_store(None, data)
    out = []
    now = time.time()
    for _ in range(n):
        code, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        await store.save_code(AuthorizationCode(
            code_hash=hash_secret(code), client_id=CLIENT, redirect_uri=REDIRECT,
            code_challenge=challenge, resource=resource, scopes=("demo:read",),
            subject="bench-user", created_at=now, expires_at=now + 600,
            family_id=uuid.uuid4().hex, access_jti=uuid.uuid4().hex, issue_refresh=True))
        out.append((code, verifier))
    await store.close()
    return out


async def drive(concurrency: int, seconds: float, work: Any) -> tuple[int, list[float]]:
    """Run ``work(client)`` in ``concurrency`` loops for ``seconds``; count and time each."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if not await work(client):
                return
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(loop(client) for _ in range(concurrency)))
    return len(latencies), latencies


def summary(name: str, count: int, latencies: list[float], seconds: float) -> dict[str, Any]:
    latencies.sort()
    return {"name": name, "count": count, "per_second": count / seconds,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else None,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else None}


async def bench(base: str, data: Path, seconds: float, concurrency: int) -> list[dict[str, Any]]:
    resource = base + "/mcp"
    rows = []

    async def metadata(client: httpx.AsyncClient) -> bool:
        r = await client.get(base + "/.well-known/oauth-authorization-server")
        return r.status_code == 200

    n, lat = await drive(concurrency, seconds, metadata)
    rows.append(summary("metadata GET (baseline)", n, lat, seconds))

    codes = await make_codes(data, resource, 40_000 if concurrency > 1 else 20_000)
    refresh_tokens: list[str] = []
    errors = 0

    async def exchange(client: httpx.AsyncClient) -> bool:
        nonlocal errors
        if not codes:
            return False
        code, verifier = codes.pop()
        r = await client.post(base + "/token", data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "client_id": CLIENT, "redirect_uri": REDIRECT, "resource": resource})
        if r.status_code != 200 or "access_token" not in r.json():
            errors += 1
            return True
        refresh_tokens.append(r.json()["refresh_token"])
        return True

    n, lat = await drive(concurrency, seconds, exchange)
    rows.append(summary("authorization_code exchange", n - errors, lat, seconds))

    async def refresh(client: httpx.AsyncClient) -> bool:
        nonlocal errors
        if not refresh_tokens:
            return False
        token = refresh_tokens.pop()
        r = await client.post(base + "/token", data={
            "grant_type": "refresh_token", "refresh_token": token, "client_id": CLIENT,
            "resource": resource})
        if r.status_code != 200:
            errors += 1
        return True

    n, lat = await drive(concurrency, seconds, refresh)
    rows.append(summary("refresh_token rotation", n, lat, seconds))
    if errors:
        print(f"errors: {errors}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    pin(1)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    results: dict[str, Any] = {"machine": machine, "runs": {}}
    for concurrency in args.concurrency:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            port = _free_port()
            proc = multiprocessing.get_context("spawn").Process(
                target=run_server, args=(port, str(data)), daemon=True)
            proc.start()
            base = f"http://127.0.0.1:{port}"
            _wait(base)
            rows = asyncio.run(bench(base, data, args.seconds, concurrency))
            proc.terminate()
            proc.join(10)
        baseline = rows[0]["per_second"]
        print(f"\nconcurrency {concurrency}, {args.seconds:.0f} s per row")
        print(f"{'':32}{'per s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs baseline':>14}")
        for row in rows:
            print(f"{row['name']:32}{row['per_second']:>10.0f}{row['p50_ms']:>10.2f}"
                  f"{row['p99_ms']:>10.2f}{row['per_second'] / baseline:>13.2f}x")
            row["ratio_to_baseline"] = row["per_second"] / baseline
        results["runs"][str(concurrency)] = rows
    print()
    write_results("token_endpoint", results)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not start")


if __name__ == "__main__":
    main()
