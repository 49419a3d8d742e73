"""The gateway wired from configuration (``build_runtime``) with the built-in authorization
server's keys, in front of a Streamable HTTP upstream: tokens signed by the AS are accepted for
their own mount only, and revocation at the AS takes effect."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.clock import OffsetClock
from bastion.config.load import parse_config
from bastion.demo.server import make_http_app
from bastion.runtime import REVOCATION_MEMORY_SECONDS, Runtime, build_runtime
from bastion.server.tokens import mint_access_token
from tests.gateway.test_resource_server import MODERN_HEADERS, call
from tests.support import free_port, serve


@dataclass
class Env:
    runtime: Runtime
    base: str
    clock: OffsetClock  # the gateway's: advance() instead of waiting

    def token(self, path: str = "/mcp/demo", scope: str = "demo:read") -> str:
        token, _ = mint_access_token(
            self.runtime.extras["keys"], issuer=self.runtime.config.issuer, subject="u1",
            client_id="c1", audience=self.base + path, scopes=scope.split(), lifetime=300,
            now=time.time())
        return token


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with serve(make_http_app()) as up:
        port = free_port()
        mount: dict[str, Any] = {"scopes": ["demo:read"], "upstream": {"url": up + "/mcp"}}
        config = parse_config({
            "data_dir": str(tmp_path / "data"), "server": {"port": port},
            "mounts": [{"name": "demo", "path": "/mcp/demo", **mount},
                       {"name": "other", "path": "/mcp/other", **mount}],
        }, source="test")
        clock = OffsetClock()
        runtime = await build_runtime(config, source="test", clock=clock)
        async with serve(runtime.app, port) as base:
            yield Env(runtime, base, clock)


async def send(env: Env, token: str, path: str = "/mcp/demo") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.post(env.base + path, json=call("echo", {"text": "hi"}), headers={
            **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
            "authorization": f"Bearer {token}"})


async def test_rs08_builtin_token_is_accepted_on_its_mount(env: Env) -> None:
    r = await send(env, env.token())
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "hi"


async def test_rs09_builtin_token_for_another_mount_is_refused(env: Env) -> None:
    r = await send(env, env.token("/mcp/other"), "/mcp/demo")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_revoked_builtin_token_is_refused(env: Env) -> None:
    token = env.token()
    assert (await send(env, token)).status_code == 200

    from bastion.oauth.rfc9068 import read_unverified_header  # noqa: F401 - header sanity

    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    await env.runtime.extras["store"].revoke_access_token(claims["jti"], claims["exp"])
    env.clock.advance(REVOCATION_MEMORY_SECONDS + 0.5)  # the gateway's "not revoked" memory is over
    r = await send(env, token)
    assert r.status_code == 401
    assert "revoked" in r.headers["www-authenticate"]


async def test_ts01_origin_is_checked_on_mounts_but_not_on_public_metadata(env: Env) -> None:
    foreign = {"origin": "http://localhost:6274"}
    async with httpx.AsyncClient(timeout=10) as c:
        meta = await c.get(env.base + "/.well-known/oauth-authorization-server",
                           headers=foreign)
        prm = await c.get(env.base + "/.well-known/oauth-protected-resource/mcp/demo",
                          headers=foreign)
        mcp = await c.post(env.base + "/mcp/demo", json=call("echo", {"text": "x"}),
                           headers={**MODERN_HEADERS, **foreign, "mcp-method": "tools/call",
                                    "mcp-name": "echo",
                                    "authorization": f"Bearer {env.token()}"})
        rebind = await c.get(env.base + "/.well-known/oauth-authorization-server",
                             headers={"host": "attacker.example"})
    assert meta.status_code == 200
    assert prm.status_code == 200
    assert mcp.status_code == 403
    assert rebind.status_code == 421


async def test_revocation_list_unreadable_fails_closed(env: Env) -> None:
    """Invariant 4: when storage is down, a token (even one verified before) is not let in."""
    token = env.token()
    assert (await send(env, token)).status_code == 200
    env.clock.advance(REVOCATION_MEMORY_SECONDS + 0.5)  # past the short "not revoked" memory
    await env.runtime.extras["store"].close()
    r = await send(env, token)
    assert r.status_code == 503
    assert r.json()["error"] == "temporarily_unavailable"
