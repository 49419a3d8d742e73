"""``bastion connect`` end to end: the official SDK's stdio client launches it against a
gateway-protected server; it completes the OAuth flow headless (a machine client's
client_credentials grant at the built-in AS) and calls tools, in both protocol eras. The
client's token never reaches the upstream, and nothing secret is stored in the clear."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from bastion.config.load import parse_config
from bastion.demo.server import make_http_app
from bastion.runtime import build_runtime
from tests.support import Recorder, free_port, serve

SECRET = "machine-secret-for-tests-0123456789"


@pytest.fixture
async def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("BASTION_TEST_AGENT_SECRET", SECRET)
    recorder = Recorder(make_http_app())
    async with serve(recorder) as upstream:
        port = free_port()
        config = parse_config({
            "data_dir": str(tmp_path / "data"), "server": {"port": port},
            "authorization_server": {"clients": [{
                "client_id": "agent", "token_endpoint_auth_method": "client_secret_basic",
                "secret": {"env": "BASTION_TEST_AGENT_SECRET"},
                "grant_types": ["client_credentials"]}]},
            "mounts": [{"name": "demo", "path": "/mcp/demo", "scopes": ["demo:read"],
                        "upstream": {"url": upstream + "/mcp"}}],
        }, source="test")
        runtime = await build_runtime(config, source="test")
        async with serve(runtime.app, port) as base:
            yield base + "/mcp/demo"
        for headers in recorder.requests:
            assert SECRET not in " ".join(headers.values())
            assert "authorization" not in headers


def params(endpoint: str, store: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "bastion.cli.main", "connect", endpoint, "--client-id", "agent",
              "--client-secret-env", "AGENT_SECRET", "--allow-http-loopback",
              "--token-store", str(store)],
        env={"AGENT_SECRET": SECRET})


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_sdk_stdio_client_through_bastion_connect(endpoint: str, tmp_path: Path,
                                                         mode: str) -> None:
    store = tmp_path / "tokens"
    for _ in range(2):  # a second launch with the same (encrypted) token store
        client: Any = Client(params(endpoint, store), mode=mode, cache=None)
        async with client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names
            r = await client.call_tool("add", {"a": 4, "b": 5})
            assert r.structured_content == {"result": 9}
    assert store.exists()
    assert SECRET.encode() not in b"".join(p.read_bytes() for p in store.parent.rglob("*")
                                           if p.is_file())
