"""The official TypeScript MCP SDK client (npm ``@modelcontextprotocol/sdk``, its
StreamableHTTP transport and an OAuthClientProvider, tests/js/ts_sdk_client.mjs) against
``bastion demo``: 401, discovery, dynamic registration, the real login and consent forms,
``finishAuth``, then tools listed and called through the gateway."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import Demo, require_package, run_node_script
from tests.support import free_port

pytestmark = [pytest.mark.node, pytest.mark.timeout(120)]


def test_typescript_sdk_client_registers_authorizes_and_calls_a_tool(
        demo: Demo, node: Path) -> None:
    require_package("@modelcontextprotocol/sdk")
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    out = run_node_script(node, "ts_sdk_client.mjs", {
        "endpoint": demo.endpoint, "username": demo.username, "password": demo.password,
        "redirectUri": redirect, "timeoutMs": 60_000}, timeout=90)
    shown = {k: v for k, v in out.items() if k != "consentPage"}
    assert out["ok"], json.dumps(shown, indent=1)

    # What the SDK asked for: DCR client, PKCE S256, the endpoint as resource, the
    # challenged scope, and a state it can check.
    assert out["clientId"].startswith("dcr-"), shown
    sent = {k: v[0] for k, v in parse_qs(urlsplit(out["authorizationUrl"]).query).items()}
    assert sent["client_id"] == out["clientId"]
    assert sent["code_challenge_method"] == "S256"
    assert sent["resource"] == demo.endpoint
    assert sent["scope"] == "demo:read"
    assert sent["redirect_uri"] == redirect

    # What came back to the client: code, its state, and the issuer (RFC 9207).
    assert set(out["callback"]) == {"code", "state", "iss"}, shown
    assert out["stateMatches"], shown
    assert out["callback"]["iss"] == out["issuer"] == demo.base
    assert "TypeScript SDK e2e" in out["consentPage"]
    assert "127.0.0.1" in out["consentPage"]

    assert out["tokenScope"].split() == ["demo:read"]
    assert "add" in out["tools"]
    assert "write_note" not in out["tools"]  # demo:read only hides the write tool
    assert out["addResult"] == {"result": 5}, shown


async def test_typescript_sdk_client_with_a_client_id_metadata_document(
        tmp_path: Path, node: Path) -> None:
    """The CIMD variant: the SDK's ``clientMetadataUrl`` is its client_id; no registration."""
    import asyncio
    import time
    import uuid

    from bastion.config.load import parse_config
    from bastion.demo.server import make_http_app
    from bastion.passwords import hash_password
    from bastion.runtime import build_runtime
    from bastion.storage.base import UserRecord
    from tests.e2e.test_cimd_sdk_oauth import REDIRECT, https_document_host
    from tests.support import serve

    require_package("@modelcontextprotocol/sdk")
    async with https_document_host(tmp_path) as (cimd_url, ca_file, hits), \
            serve(make_http_app()) as upstream:
        port = free_port()
        runtime = await build_runtime(parse_config({
            "data_dir": str(tmp_path / "data"), "server": {"port": port},
            "tls_ca_file": str(ca_file), "authorization_server": {"allow_http_loopback": True},
            "mounts": [{"name": "demo", "path": "/mcp/demo", "scopes": ["demo:read"],
                        "upstream": {"url": upstream + "/mcp"}}]}, source="test"),
            source="test")
        await runtime.extras["store"].create_user(UserRecord(
            "tess", uuid.uuid4().hex, hash_password("pw-tess-1"), time.time()))
        async with serve(runtime.app, port) as base:
            out = await asyncio.to_thread(run_node_script, node, "ts_sdk_client.mjs", {
                "endpoint": base + "/mcp/demo", "username": "tess", "password": "pw-tess-1",
                "redirectUri": REDIRECT, "clientMetadataUrl": cimd_url, "timeoutMs": 60_000},
                timeout=90)
    shown = {k: v for k, v in out.items() if k != "consentPage"}
    assert out["ok"], json.dumps(shown, indent=1)
    assert out["clientId"] == cimd_url, shown
    assert hits, "the AS fetched the metadata document"
    assert "CIMD e2e client" in out["consentPage"]
    assert out["addResult"] == {"result": 5}, shown
