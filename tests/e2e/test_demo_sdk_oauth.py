"""The README's first command, used by the official Python SDK client with its OAuth provider:
discovery from the 401, dynamic registration, login and consent forms, token, tool calls,
step-up on 403, and the token bound to the demo endpoint."""

from __future__ import annotations

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from tests.e2e.conftest import Demo
from tests.support import HeadlessUser

REDIRECT = "http://127.0.0.1:65531/callback"


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class HeadlessRedirect:
    def __init__(self, user: HeadlessUser) -> None:
        self.user = user
        self.result: AuthorizationCodeResult | None = None
        self.authorize_urls: list[str] = []

    async def redirect_handler(self, url: str) -> None:
        self.authorize_urls.append(url)
        q = await self.user.authorize(url, REDIRECT)
        assert "code" in q, q
        self.result = AuthorizationCodeResult(code=q["code"], state=q.get("state"),
                                              iss=q.get("iss"))

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def provider(demo: Demo, storage: MemoryStorage, headless: HeadlessRedirect,
             scope: str | None = None) -> OAuthClientProvider:
    return OAuthClientProvider(
        demo.endpoint,
        OAuthClientMetadata(client_name="SDK e2e", redirect_uris=[AnyUrl(REDIRECT)],
                            grant_types=["authorization_code", "refresh_token"],
                            response_types=["code"], token_endpoint_auth_method="none",
                            scope=scope),
        storage, headless.redirect_handler, headless.callback_handler)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_demo_endpoint_with_sdk_oauth_client(demo: Demo, mode: str) -> None:
    storage = MemoryStorage()
    headless = HeadlessRedirect(HeadlessUser(demo.username, demo.password))
    auth = provider(demo, storage, headless)
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http, Client(
            streamable_http_client(demo.endpoint, http_client=http), mode=mode,
            cache=None) as client:
        r = await client.call_tool("add", {"a": 1, "b": 2})
        assert r.structured_content == {"result": 3}
        names = {t.name for t in (await client.list_tools()).tools}
        # demo:read only: the write tool is hidden until the client steps up.
        assert "write_note" not in names
        r = await client.call_tool("write_note", {"title": "t", "body": "b"})
        assert "stored" in r.content[0].text  # type: ignore[union-attr]
    assert storage.tokens is not None
    assert len(headless.authorize_urls) == 2  # first login, then the step-up
    assert "demo%3Awrite" in headless.authorize_urls[1]
    consent_page = next(p for p in headless.user.pages if "Allow" in p)
    assert "127.0.0.1" in consent_page


async def test_demo_audit_trail_records_the_flow_and_holds_no_secret(demo: Demo) -> None:
    """Registration, consent, issuance and the gateway decisions are in the signed chain;
    neither the audit store nor the demo's log holds any token, code or password."""
    import json
    import subprocess
    import sys

    storage = MemoryStorage()
    headless = HeadlessRedirect(HeadlessUser(demo.username, demo.password))
    codes: list[str] = []
    original = headless.redirect_handler

    async def keep_code(url: str) -> None:
        await original(url)
        assert headless.result is not None
        codes.append(headless.result.code)

    auth = provider(demo, storage, HeadlessRedirect(headless.user))
    auth.context.redirect_handler = keep_code
    auth.context.callback_handler = headless.callback_handler
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http, Client(
            streamable_http_client(demo.endpoint, http_client=http), mode="2026-07-28",
            cache=None) as client:
        await client.call_tool("echo", {"text": "audited"})
    out = subprocess.run([sys.executable, "-m", "bastion.cli.main", "audit", "export",
                          "--data-dir", str(demo.data)], capture_output=True, text=True,
                         timeout=60, check=True)
    kinds = [json.loads(line).get("kind") for line in out.stdout.splitlines()]
    for kind in ("client.registered", "consent.granted", "token.issued", "gateway.decision",
                 "gateway.upstream", "gateway.stdio_spawn"):
        assert kind in kinds, kind
    assert storage.tokens is not None and storage.client is not None
    secrets = [storage.tokens.access_token, demo.password, *codes]
    if storage.tokens.refresh_token:
        secrets.append(storage.tokens.refresh_token)
    if storage.client.client_secret:
        secrets.append(storage.client.client_secret)
    haystack = b"".join(p.read_bytes() for p in demo.data.rglob("audit*") if p.is_file())
    haystack += (demo.data.parent / "demo.log").read_bytes()
    assert codes
    for secret in secrets:
        assert secret.encode() not in haystack
