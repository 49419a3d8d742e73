"""The policy at the gateway, with the official SDK client: a denied call gets the JSON-RPC
error, an argument rule refuses, lists show exactly what may be used, a call needing more scope
gets the 403 challenge and the SDK client steps up through the built-in AS and succeeds, and a
reload swaps the policy atomically (a bad file leaves the old one in force)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from mcp.shared.exceptions import MCPError
from pydantic import AnyUrl

from bastion.config.load import load_config
from bastion.demo.server import make_http_app
from bastion.passwords import hash_password
from bastion.runtime import Runtime, build_runtime, reload_policies
from bastion.server.tokens import mint_access_token
from bastion.storage.base import UserRecord
from tests.e2e.test_demo_sdk_oauth import REDIRECT, HeadlessRedirect, MemoryStorage
from tests.support import HeadlessUser, free_port, serve

POLICY = """
[[rules]]
id = "basics"
effect = "allow"
tools = ["echo", "add", "count"]

[[rules]]
id = "small-sums"
effect = "deny"
tools = "add"
when = "args.a + args.b > 1000"
message = "Sums above 1000 are not allowed."

[[rules]]
id = "notes"
effect = "allow"
tools = "write_note"
when = '!args.title.startsWith("/")'

[[rules]]
id = "notes-need-write"
effect = "require_scopes"
tools = "write_note"
scopes = ["demo:write"]

[[rules]]
id = "readme"
effect = "allow"
resources = "demo://readme"
"""


@dataclass
class Env:
    runtime: Runtime
    endpoint: str
    policy_file: Path

    def token(self, scope: str) -> str:
        token, _ = mint_access_token(
            self.runtime.extras["keys"], issuer=self.runtime.config.issuer, subject="u1",
            client_id="c1", audience=self.endpoint, scopes=scope.split(), lifetime=300,
            now=time.time())
        return token


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(POLICY)
    async with serve(make_http_app()) as up:
        port = free_port()
        config_file = tmp_path / "bastion.toml"
        config_file.write_text(
            f'data_dir = "data"\n[server]\nport = {port}\n'
            '[scope_implies]\n"demo:write" = ["demo:read"]\n'
            '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
            'policy = "policy.toml"\n'
            f'[mounts.upstream]\nurl = "{up}/mcp"\n')
        runtime = await build_runtime(load_config(config_file), source=str(config_file))
        async with serve(runtime.app, port) as base:
            yield Env(runtime, base + "/mcp/demo", policy_file)


async def connect(env: Env, token: str, mode: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20)
    return http, Client(streamable_http_client(env.endpoint, http_client=http), mode=mode,
                        cache=None)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_denied_call_gets_the_jsonrpc_error_without_rule_internals(env: Env,
                                                                        mode: str) -> None:
    http, client = await connect(env, env.token("demo:read demo:write"), mode)
    async with http, client:
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {
            "result": 3}
        with pytest.raises(MCPError) as err:
            await client.call_tool("add", {"a": 999, "b": 2})
        assert err.value.error.code == -32003
        assert err.value.error.message == "Sums above 1000 are not allowed."
        with pytest.raises(MCPError) as err:
            await client.call_tool("whoami_upstream", {})
        assert "small-sums" not in err.value.error.message
        assert err.value.error.message == "This operation is not permitted."


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_argument_rule_refuses_and_lists_match_the_policy(env: Env, mode: str) -> None:
    http, client = await connect(env, env.token("demo:read demo:write"), mode)
    async with http, client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo", "add", "count", "write_note"}
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert resources == {"demo://readme"}
        with pytest.raises(MCPError):
            await client.call_tool("write_note", {"title": "/etc/x", "body": "b"})
        ok = await client.call_tool("write_note", {"title": "fine", "body": "b"})
        assert "stored" in ok.content[0].text  # type: ignore[union-attr]
    http, client = await connect(env, env.token("demo:read"), mode)
    async with http, client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo", "add", "count"}


async def test_sdk_client_steps_up_through_the_builtin_as(env: Env) -> None:
    store = env.runtime.extras["store"]
    await store.create_user(UserRecord("bob", uuid.uuid4().hex, hash_password("pw-bob-123"),
                                       time.time()))
    headless = HeadlessRedirect(HeadlessUser("bob", "pw-bob-123"))
    auth = OAuthClientProvider(
        env.endpoint,
        OAuthClientMetadata(client_name="policy e2e", redirect_uris=[AnyUrl(REDIRECT)],
                            grant_types=["authorization_code", "refresh_token"],
                            response_types=["code"], token_endpoint_auth_method="none"),
        MemoryStorage(), headless.redirect_handler, headless.callback_handler)
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http, Client(
            streamable_http_client(env.endpoint, http_client=http), mode="2026-07-28",
            cache=None) as client:
        await client.call_tool("echo", {"text": "hi"})
        r = await client.call_tool("write_note", {"title": "t", "body": "b"})
        assert "stored" in r.content[0].text  # type: ignore[union-attr]
    assert len(headless.authorize_urls) == 2
    assert "demo%3Awrite" in headless.authorize_urls[1]


async def test_reload_is_atomic_and_a_bad_policy_keeps_the_old_one(env: Env) -> None:
    holder = env.runtime.extras["policies"]["demo"][1]
    before = holder.current
    env.policy_file.write_text('[[rules]]\neffect = "allow"\ntools = "echo"\nwhen = "args.("\n')
    errors = reload_policies(env.runtime)
    assert len(errors) == 1
    assert "not valid CEL" in errors[0]
    assert holder.current is before
    env.policy_file.write_text('[[rules]]\neffect = "allow"\ntools = "echo"\n')
    assert reload_policies(env.runtime) == []
    http, client = await connect(env, env.token("demo:read"), "2026-07-28")
    async with http, client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"echo"}
