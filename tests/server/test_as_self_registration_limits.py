"""What a self-registered client may not have, met over a real connection: a token with no
user and no consent (client_credentials) is only for clients an operator created."""

from __future__ import annotations

from bastion.storage import ClientRecord, hash_secret
from tests.server.conftest import Live


async def test_as15_register_then_client_credentials_is_refused_over_loopback(
    live: Live,
) -> None:
    """The path an attacker took: register for client_credentials, ask for every scope, call
    the write tools. Registration now says no, and says what to do instead."""
    r = await live.request("POST", "/register", json={
        "redirect_uris": ["https://app.example/cb"], "application_type": "web",
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["client_credentials"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_client_metadata"
    assert "operator" in r.json()["error_description"]


async def test_as15_stored_dcr_client_is_refused_client_credentials_over_loopback(
    live: Live,
) -> None:
    secret = "an-old-dcr-secret-0123456789abcdef"
    await live.store.put_client(ClientRecord(
        client_id="dcr-old", client_name="Old", redirect_uris=("https://app.example/cb",),
        token_endpoint_auth_method="client_secret_post",
        grant_types=("client_credentials",), response_types=("code",), scope=None,
        application_type="web", source="dcr", created_at=live.clock.now(),
        secret_hash=hash_secret(secret)))
    r = await live.request("POST", "/token", data={
        "grant_type": "client_credentials", "client_id": "dcr-old", "client_secret": secret,
        "resource": live.base + "/mcp", "scope": "mcp:read mcp:write profile"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "unauthorized_client"
