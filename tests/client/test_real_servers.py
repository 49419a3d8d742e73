"""Against the real thing: ``bastion demo`` (Bastion's AS with its login and consent pages, and
its gateway) with the official SDK's Streamable HTTP transport authorizing through
``Httpx2McpOAuth``; and a restart in a second process that resumes with the refresh token."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.client import EncryptedFileTokenStore, FetchPolicy, Httpx2McpOAuth, oauth_for
from tests.e2e.conftest import Demo, demo  # noqa: F401 - the fixture
from tests.support import HeadlessUser

REDIRECT = "http://127.0.0.1:65531/callback"
ROOT = Path(__file__).resolve().parents[2]


class UserAuthorizer:
    redirect_uri = REDIRECT

    def __init__(self, user: HeadlessUser) -> None:
        self.user = user
        self.urls: list[str] = []

    async def authorize(self, url: str) -> Mapping[str, str]:
        self.urls.append(url)
        return await self.user.authorize(url, REDIRECT)


def scopes_of(url: str) -> set[str]:
    return set(parse_qs(urlsplit(url).query)["scope"][0].split())


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_official_sdk_transport_with_bastion_client_auth(
        demo: Demo, mode: str, tmp_path: Path) -> None:  # noqa: F811
    authorizer = UserAuthorizer(HeadlessUser(demo.username, demo.password))
    store = EncryptedFileTokenStore(tmp_path / "tokens")
    auth = oauth_for(demo.endpoint, authorizer=authorizer, store=store,
                     policy=FetchPolicy(allow_http_loopback=True))
    async with auth, httpx2.AsyncClient(auth=Httpx2McpOAuth(auth), timeout=30) as http, Client(
            streamable_http_client(demo.endpoint, http_client=http), mode=mode,
            cache=None) as client:
        r = await client.call_tool("add", {"a": 1, "b": 2})
        assert r.structured_content == {"result": 3}
        r = await client.call_tool("write_note", {"title": "t", "body": "b"})
        assert "stored" in r.content[0].text  # type: ignore[union-attr]
    assert len(authorizer.urls) == 2  # the login, then one step-up
    first, second = (scopes_of(u) for u in authorizer.urls)
    assert "demo:read" in first and {"demo:read", "demo:write"} <= second  # the union
    for url in authorizer.urls:
        query = parse_qs(urlsplit(url).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["resource"] == [demo.endpoint]
    assert "access_token" not in (tmp_path / "tokens").read_bytes().decode("latin-1")


def run_client(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "tests.client.restart_client", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_second_process_resumes_with_the_stored_refresh_token(
        demo: Demo, tmp_path: Path) -> None:  # noqa: F811
    store = str(tmp_path / "client" / "tokens")
    args = (demo.endpoint, store, demo.username, demo.password)
    first = run_client("login", *args)
    assert first["logins"] == 1 and first["result"] == {"result": 5}
    second = run_client("resume", *args)
    assert second["logins"] == 0 and second["result"] == {"result": 5}
    # The AS rotated the refresh token: the second process really used it.
    assert second["refresh_token_sha256"] != first["refresh_token_sha256"]
