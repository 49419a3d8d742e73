"""A mount trusting an external authorization server by issuer URL: its metadata and JWKS come
through the one SSRF-safe fetcher (invariant 5). Tokens it signs are accepted for the mount; a
symmetric key slipped into its JWKS cannot be used to forge one; and with loopback not allowed
the fetcher refuses to contact it, so the gateway fails closed (invariant 4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.config.load import parse_config
from bastion.demo.server import make_http_app
from bastion.runtime import build_runtime
from tests.gateway.test_resource_server import MODERN_HEADERS, call
from tests.support import SigningIssuer, free_port, serve

HMAC_SECRET = b"a-symmetric-key-an-attacker-knows"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
async def external_as() -> AsyncIterator[tuple[str, SigningIssuer, list[str]]]:
    hits: list[str] = []
    port = free_port()
    issuer = SigningIssuer(issuer=f"http://127.0.0.1:{port}")

    async def metadata(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        return JSONResponse({"issuer": issuer.issuer, "jwks_uri": issuer.issuer + "/jwks"})

    async def jwks(request: Request) -> JSONResponse:
        hits.append(request.url.path)
        oct_key = {"kty": "oct", "kid": "hs", "k": b64(HMAC_SECRET)}
        return JSONResponse({"keys": [issuer.key.as_dict(private=False), oct_key]})

    app = Starlette(routes=[Route("/.well-known/oauth-authorization-server", metadata),
                            Route("/jwks", jwks)])
    async with serve(app, port):
        yield issuer.issuer, issuer, hits


async def gateway_call(tmp_path: Path, issuer: str, port: int, token: str, *,
                       allow_loopback: bool) -> httpx.Response:
    async with serve(make_http_app()) as upstream:
        config = parse_config({
            "data_dir": str(tmp_path / "data"), "server": {"port": port},
            "authorization_server": {"enabled": False}, "audit": {"enabled": False},
            "trusted_issuers": [{"issuer": issuer, "algorithms": ["ES256"],
                                 "allow_http_loopback": allow_loopback}],
            "mounts": [{"name": "demo", "path": "/mcp/demo", "issuers": [issuer],
                        "upstream": {"url": upstream + "/mcp"}}],
        }, source="test")
        runtime = await build_runtime(config, source="test")
        async with serve(runtime.app, port) as base, httpx.AsyncClient(timeout=15) as c:
            return await c.post(base + "/mcp/demo", json=call("echo", {"text": "x"}), headers={
                **MODERN_HEADERS, "mcp-method": "tools/call", "mcp-name": "echo",
                "authorization": f"Bearer {token}"})


def resource(port: int) -> str:
    return f"http://127.0.0.1:{port}/mcp/demo"


async def test_bp09_external_issuer_keys_come_through_the_fetcher(
    tmp_path: Path, external_as: tuple[str, SigningIssuer, list[str]]
) -> None:
    issuer, signer, hits = external_as
    port = free_port()
    token = signer.mint(audience=resource(port), scope="")
    r = await gateway_call(tmp_path, issuer, port, token, allow_loopback=True)
    assert r.status_code == 200, r.text
    assert hits == ["/.well-known/oauth-authorization-server", "/jwks"]


async def test_rs08_symmetric_key_in_external_jwks_cannot_forge(
    tmp_path: Path, external_as: tuple[str, SigningIssuer, list[str]]
) -> None:
    issuer, _, _ = external_as
    port = free_port()
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "kid": "hs", "typ": "at+jwt"}).encode())
    body = b64(json.dumps({"iss": issuer, "sub": "mallory", "aud": resource(port),
                           "exp": now + 300, "client_id": "c"}).encode())
    sig = b64(hmac.new(HMAC_SECRET, f"{head}.{body}".encode(), hashlib.sha256).digest())
    r = await gateway_call(tmp_path, issuer, port, f"{head}.{body}.{sig}", allow_loopback=True)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_bp11_loopback_issuer_is_not_contacted_unless_allowed(
    tmp_path: Path, external_as: tuple[str, SigningIssuer, list[str]]
) -> None:
    issuer, signer, hits = external_as
    port = free_port()
    token = signer.mint(audience=resource(port), scope="")
    r = await gateway_call(tmp_path, issuer, port, token, allow_loopback=False)
    assert r.status_code == 503  # fail closed: the keys cannot be had
    assert hits == []
