"""One client process for the restart test: ``login`` as the demo user, or ``resume`` from the
store with a clock two hours ahead (so the stored access token has expired) and an
authorizer that fails the test if a login is attempted. Prints one JSON line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Mapping

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bastion.client import (
    EncryptedFileTokenStore,
    FetchPolicy,
    Httpx2McpOAuth,
    OAuthSession,
    oauth_for,
)
from bastion.clock import OffsetClock
from tests.support import HeadlessUser

REDIRECT = "http://127.0.0.1:65531/callback"


class UserAuthorizer:
    redirect_uri = REDIRECT

    def __init__(self, user: HeadlessUser | None) -> None:
        self.user = user
        self.logins = 0

    async def authorize(self, url: str) -> Mapping[str, str]:
        self.logins += 1
        if self.user is None:
            raise AssertionError("a login was attempted although a refresh token was stored")
        return await self.user.authorize(url, REDIRECT)


async def main(mode: str, endpoint: str, store_path: str, username: str, password: str) -> None:
    login = mode == "login"
    authorizer = UserAuthorizer(HeadlessUser(username, password) if login else None)
    store = EncryptedFileTokenStore(store_path)
    auth = oauth_for(endpoint, authorizer=authorizer, store=store,
                     policy=FetchPolicy(allow_http_loopback=True),
                     clock=OffsetClock(0 if login else 7200))
    async with auth, httpx2.AsyncClient(auth=Httpx2McpOAuth(auth), timeout=30) as http, Client(
            streamable_http_client(endpoint, http_client=http), mode="legacy",
            cache=None) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
    session = auth.session
    assert isinstance(session, OAuthSession) and session.binding is not None
    tokens = store.load_tokens(session.binding.issuer, session.binding.resource)
    assert tokens is not None and tokens.refresh_token is not None
    print(json.dumps({
        "result": result.structured_content, "logins": authorizer.logins,
        "refresh_token_sha256": hashlib.sha256(tokens.refresh_token.encode()).hexdigest(),
    }), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
