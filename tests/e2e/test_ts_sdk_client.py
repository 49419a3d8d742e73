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
