"""Rate limits per principal, client and tool: in-process, and shared by two gateways through
Redis (127.0.0.1:6379; skipped with a reason when absent, a failure under CI=true)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.config.load import parse_config
from bastion.demo.server import make_http_app
from bastion.policy.ratelimit import RateLimit, take
from bastion.runtime import Runtime, build_runtime
from bastion.server.tokens import mint_access_token
from tests.gateway.test_resource_server import MODERN_HEADERS, call
from tests.support import free_port, serve

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_bucket_arithmetic() -> None:
    limit = RateLimit("principal", per_minute=60, burst=2)
    ok, left, _ = take(2, 0, 0, limit)
    assert (ok, left) == (True, 1)
    ok, left, _ = take(0.5, 0, 0, limit)
    assert not ok
    ok, left, _ = take(0.5, 0, 0.5, limit)  # half a second refills half a token
    assert ok
    assert take(0, 0, 1000, limit)[1] == 1  # capped at burst, minus the one taken


async def require_redis() -> Any:
    import redis.asyncio

    client = redis.asyncio.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required on CI but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return client


async def gateway(tmp_path: Path, up: str, redis_url: str | None,
                  public_url: str | None = None, port: int | None = None
                  ) -> tuple[Runtime, int]:
    port = port or free_port()
    server: dict[str, Any] = {"port": port}
    if public_url:
        server["public_url"] = public_url
    data: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"), "server": server,
        "mounts": [{"name": "demo", "path": "/mcp/demo", "scopes": ["demo:read"],
                    "rate_limits": [{"key": "principal", "per_minute": 6, "burst": 3},
                                    {"key": "tool", "per_minute": 60, "burst": 100}],
                    "upstream": {"url": up + "/mcp"}}],
    }
    if redis_url:
        data["redis_url"] = redis_url
    return await build_runtime(parse_config(data, source="test"), source="test"), port


def token(runtime: Runtime, base: str, subject: str) -> str:
    t, _ = mint_access_token(runtime.extras["keys"], issuer=runtime.config.issuer,
                             subject=subject, client_id="c", audience=base + "/mcp/demo",
                             scopes=["demo:read"], lifetime=300, now=time.time())
    return t


async def send(base: str, tok: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.post(base + "/mcp/demo", json=call("echo", {"text": "x"}), headers={
            **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
            "authorization": f"Bearer {tok}"})


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    async with serve(make_http_app()) as up:
        yield up


async def test_principal_limit_gives_429_with_retry_after(tmp_path: Path, upstream: str) -> None:
    runtime, port = await gateway(tmp_path, upstream, None)
    async with serve(runtime.app, port) as base:
        alice, bob = token(runtime, base, "alice"), token(runtime, base, "bob")
        codes = [(await send(base, alice)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = await send(base, alice)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == -32029
        assert (await send(base, bob)).status_code == 200  # buckets are per principal


@pytest.mark.redis
async def test_redis_buckets_are_shared_by_two_gateways(tmp_path: Path, upstream: str) -> None:
    client = await require_redis()
    url = REDIS_URL
    try:
        # Two replicas of one deployment: same public URL, keys and database; own ports.
        port_one, port_two = free_port(), free_port()
        public = f"http://127.0.0.1:{port_one}"
        one, _ = await gateway(tmp_path, upstream, url, public, port_one)
        two, _ = await gateway(tmp_path, upstream, url, public, port_two)
        async with serve(one.app, port_one) as base_one, serve(two.app, port_two) as base_two:
            tok = token(one, public, "carol-" + secrets.token_hex(4))
            codes = [(await send(base_one, tok)).status_code,
                     (await send(base_two, tok)).status_code,
                     (await send(base_one, tok)).status_code,
                     (await send(base_two, tok)).status_code]
        assert codes == [200, 200, 200, 429]
    finally:
        await client.aclose()


async def test_redis_down_fails_closed(tmp_path: Path, upstream: str) -> None:
    """Invariant 4: shared buckets that cannot be reached meter nothing, so nothing passes."""
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    runtime, port = await gateway(tmp_path, upstream, nowhere)
    async with serve(runtime.app, port) as base:
        r = await send(base, token(runtime, base, "alice"))
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "Rate limiting is unavailable; try again later"
