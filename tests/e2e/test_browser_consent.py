"""A real browser on the real login and consent pages: Debian's chromium, driven by Playwright
(tests/js/browser_consent.mjs), opens an authorization URL for a client registered with DCR,
signs in, sees who is asking for what (client, redirect host, scopes, the localhost warning),
approves, and lands on the client's loopback redirect with ``code``, ``state`` and ``iss``.
The test then redeems the code with its PKCE verifier and calls a tool with the token."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.e2e.conftest import Demo, require_package, run_node_script
from tests.support import free_port

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.timeout(150)]

CLIENT_NAME = "Browser e2e client"
MODERN = "2026-07-28"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def register(http: httpx.Client, endpoint: str, redirect: str) -> str:
    r = http.post(endpoint, json={
        "client_name": CLIENT_NAME, "redirect_uris": [redirect], "application_type": "native",
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
        "response_types": ["code"], "scope": "demo:read"})
    assert r.status_code == 201, r.text
    client_id: str = r.json()["client_id"]
    return client_id


def call_tool(http: httpx.Client, endpoint: str, token: str, name: str,
              arguments: dict[str, Any]) -> dict[str, Any]:
    """One stateless 2026-07-28 ``tools/call``, headers and ``_meta`` as the version requires."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": name, "arguments": arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": "browser-e2e", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}}}
    r = http.post(endpoint, json=body, headers={
        "authorization": f"Bearer {token}", "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call", "mcp-name": name,
        "accept": "application/json, text/event-stream"})
    assert r.status_code == 200, (r.status_code, r.headers, r.text)
    if r.headers["content-type"].startswith("text/event-stream"):
        data = [line.removeprefix("data:").strip() for line in r.text.splitlines()
                if line.startswith("data:")]
        messages = [json.loads(d) for d in data if d]
        reply: dict[str, Any] = next(m for m in messages if m.get("id") == 1)
        return reply
    result: dict[str, Any] = r.json()
    return result


def explain_failure(seen: dict[str, Any]) -> str:
    """Name the known ways a real browser fails where a headless client does not."""
    report = json.dumps(seen, indent=1)
    stuck = seen.get("stuckAt") or {}
    if "Origin not allowed" in stuck.get("text", ""):
        origins = [p["origin"] for p in seen.get("posts", [])]
        return (f"the sign-in form POST was refused by the Origin check; the browser sent "
                f"Origin {origins} (pages say Referrer-Policy: no-referrer, so a browser sends "
                f"Origin: null on a form POST)\n{report}")
    if any("form-action" in line for line in seen.get("console", [])):
        return ("the consent form POST was blocked by the page's CSP form-action, which a "
                "browser also applies to the redirect to the client's redirect URI\n" + report)
    return report


def test_browser_signs_in_consents_and_lands_on_the_redirect(
        demo: Demo, node: Path, chromium: Path, artifacts: Path) -> None:
    require_package("playwright-core")
    redirect = f"http://localhost:{free_port()}/callback"
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    screenshot = artifacts / "browser-consent.png"
    screenshot.unlink(missing_ok=True)

    with httpx.Client(timeout=15) as http:
        meta = http.get(demo.base + "/.well-known/oauth-authorization-server").json()
        client_id = register(http, meta["registration_endpoint"], redirect)
        authorize_url = meta["authorization_endpoint"] + "?" + urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
            "resource": demo.endpoint, "scope": "demo:read"})

        seen = run_node_script(node, "browser_consent.mjs", {
            "authorizeUrl": authorize_url, "redirectUri": redirect,
            "username": demo.username, "password": demo.password,
            "screenshot": str(screenshot), "chromium": str(chromium), "timeoutMs": 90_000,
        }, timeout=120)
        assert seen["ok"], explain_failure(seen)

        assert seen["loginTitle"] == "Sign in"
        consent = seen["consentText"]
        assert f"Allow {CLIENT_NAME}?" in consent
        assert f"Signed in as {demo.username}" in consent
        assert "You will be sent back to\nlocalhost" in consent, consent
        assert "demo:read" in consent
        assert "Local application." in consent  # the localhost-only warning
        assert "Unverified application." in consent  # DCR: the name is self-asserted
        assert demo.endpoint in consent
        assert screenshot.read_bytes().startswith(b"\x89PNG"), "no screenshot kept"
        # The __Host- cookies survived on http://127.0.0.1 (a secure context for chromium).
        cookies = {c["name"]: c for c in seen["cookies"]}
        assert cookies and all(n.startswith("__Host-") for n in cookies), cookies
        assert all(c["secure"] and c["httpOnly"] and c["sameSite"] == "Lax"
                   for c in cookies.values()), cookies

        landed = urlsplit(seen["callbackUrl"])
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == redirect
        query = {k: v[0] for k, v in parse_qs(landed.query).items()}
        assert set(query) == {"code", "state", "iss"}, query
        assert query["state"] == state
        assert query["iss"] == meta["issuer"]

        r = http.post(meta["token_endpoint"], data={
            "grant_type": "authorization_code", "code": query["code"],
            "redirect_uri": redirect, "client_id": client_id, "code_verifier": verifier,
            "resource": demo.endpoint})
        assert r.status_code == 200, r.text
        tokens = r.json()
        assert tokens["token_type"].lower() == "bearer"
        assert tokens["scope"].split() == ["demo:read"]

        reply = call_tool(http, demo.endpoint, tokens["access_token"], "add", {"a": 2, "b": 3})
        assert reply["result"]["structuredContent"] == {"result": 5}, reply
