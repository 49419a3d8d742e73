"""RFC 7591 dynamic client registration and its policy (AS-15, AS-19, AS-25)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.storage import ClientRecord, hash_secret
from tests.server.conftest import RESOURCE, Harness, make_harness


async def _register(h: Harness, body: dict[str, Any], **headers: str) -> Any:
    return await h.http.post("/register", json=body, headers=headers)


async def test_as15_register_public_native_client_and_use_it(h: Harness) -> None:
    r = await _register(h, {"redirect_uris": ["http://127.0.0.1:7777/cb"],
                            "client_name": "CLI", "token_endpoint_auth_method": "none",
                            "grant_types": ["authorization_code", "refresh_token"],
                            "application_type": "native"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert "client_secret" not in body and body["application_type"] == "native"
    assert r.headers["cache-control"] == "no-store"
    code, verifier, _ = await h.get_code(client_id=body["client_id"],
                                         redirect_uri="http://127.0.0.1:7777/cb")
    r = await h.exchange(code, verifier, client_id=body["client_id"],
                         redirect_uri="http://127.0.0.1:7777/cb")
    assert r.status_code == 200 and "refresh_token" in r.json()


async def test_dcr_client_is_shown_as_unverified(h: Harness) -> None:
    body = (await _register(h, {"redirect_uris": ["http://localhost:7777/cb"],
                                "client_name": "Totally Legit",
                                "token_endpoint_auth_method": "none"})).json()
    params, _ = h.authorize_params(client_id=body["client_id"],
                                   redirect_uri="http://localhost:7777/cb")
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"])
    page = await h.http.get(r.headers["location"])
    assert "Unverified application" in page.text and "Local application" in page.text


async def test_dcr_confidential_client_gets_a_secret_that_works(h: Harness) -> None:
    body = (await _register(h, {"redirect_uris": ["https://app.example/cb"],
                                "token_endpoint_auth_method": "client_secret_post",
                                "application_type": "web"})).json()
    assert body["client_secret"] and body["grant_types"] == ["authorization_code"]
    code, verifier, _ = await h.get_code(client_id=body["client_id"],
                                         redirect_uri="https://app.example/cb")
    r = await h.exchange(code, verifier, client_id=body["client_id"],
                         redirect_uri="https://app.example/cb",
                         client_secret=body["client_secret"])
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic", "none"])
@pytest.mark.parametrize("grants", [["client_credentials"],
                                    ["authorization_code", "client_credentials"],
                                    ["client_credentials", "refresh_token"]])
async def test_as15_dcr_refuses_client_credentials(h: Harness, method: str,
                                                   grants: list[str]) -> None:
    """Anyone may register; a token with no user and no consent is for clients an operator
    made. Registering for client_credentials used to succeed, and the client then got every
    scope of every mount without anyone's consent."""
    r = await _register(h, {"redirect_uris": ["https://app.example/cb"],
                            "token_endpoint_auth_method": method, "grant_types": grants,
                            "application_type": "web"})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_client_metadata"
    assert "bastion clients add" in r.json()["error_description"]
    assert await h.store.list_clients() == []


async def test_stored_self_registered_client_gets_no_client_credentials(h: Harness) -> None:
    """A registration made before the rule still holds client_credentials in the store: the
    token endpoint refuses it for any client an operator did not create."""
    secret = "an-old-dcr-secret-0123456789abcdef"
    await h.store.put_client(ClientRecord(
        client_id="dcr-old", client_name="Old", redirect_uris=("https://app.example/cb",),
        token_endpoint_auth_method="client_secret_post",
        grant_types=("client_credentials",), response_types=("code",), scope=None,
        application_type="web", source="dcr", created_at=h.clock.now(),
        secret_hash=hash_secret(secret)))
    r = await h.http.post("/token", data={
        "grant_type": "client_credentials", "client_id": "dcr-old", "client_secret": secret,
        "resource": RESOURCE, "scope": "mcp:read mcp:write"})
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client", r.text


@pytest.mark.parametrize(
    ("uri", "app_type"),
    [
        ("javascript:alert(1)", None),
        ("data:text/html,hi", None),
        ("http://evil.example/cb", None),
        ("http://evil.example/cb", "native"),
        ("com.example.app:/cb", "native"),  # custom schemes are off by default
        ("https://app.example/cb#frag", None),
    ],
)
async def test_as19_dcr_refuses_redirect_uri(h: Harness, uri: str, app_type: str | None) -> None:
    body: dict[str, Any] = {"redirect_uris": [uri], "token_endpoint_auth_method": "none"}
    if app_type:
        body["application_type"] = app_type
    r = await _register(h, body)
    assert r.status_code == 400 and r.json()["error"] == "invalid_redirect_uri"


async def test_as25_web_client_with_localhost_redirect_is_refused(h: Harness) -> None:
    r = await _register(h, {"redirect_uris": ["http://localhost:3000/cb"],
                            "application_type": "web", "token_endpoint_auth_method": "none"})
    assert r.json()["error"] == "invalid_redirect_uri"


async def test_dcr_bad_metadata_is_invalid_client_metadata(h: Harness) -> None:
    r = await _register(h, {"redirect_uris": ["https://a.example/cb"],
                            "token_endpoint_auth_method": "tls_client_auth"})
    assert r.json()["error"] == "invalid_client_metadata"


@pytest.fixture
async def h_custom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async for harness in make_harness(
        tmp_path, monkeypatch, dcr_allow_custom_schemes=True, dcr_rate_limit_per_minute=2,
        dcr_initial_access_token={"env": "BASTION_TEST_IAT"},
    ):
        yield harness


@pytest.fixture(autouse=True)
def _iat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_TEST_IAT", "initial-access-token-for-tests")


async def test_dcr_policy_initial_token_custom_scheme_and_rate_limit(h_custom: Harness) -> None:
    h = h_custom
    body = {"redirect_uris": ["com.example.app:/cb"], "application_type": "native",
            "token_endpoint_auth_method": "none"}
    r = await _register(h, body)
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    auth = {"Authorization": "Bearer initial-access-token-for-tests"}
    r = await _register(h, body, **auth)
    assert r.status_code == 201, r.text
    r = await _register(h, body, **auth)
    assert r.status_code == 429  # third request in the minute (limit 2)


async def test_unused_registrations_expire(h: Harness) -> None:
    first = (await _register(h, {"redirect_uris": ["http://localhost:1/cb"],
                                 "token_endpoint_auth_method": "none"})).json()
    h.clock.advance(86400 + 1)
    await _register(h, {"redirect_uris": ["http://localhost:2/cb"],
                        "token_endpoint_auth_method": "none"})
    params, _ = h.authorize_params(client_id=first["client_id"],
                                   redirect_uri="http://localhost:1/cb")
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 400 and "invalid_client" in r.text


@pytest.mark.parametrize("client_uri", [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox",
    "file:///etc/passwd",
    "http://app.example/",          # http only on loopback, and only where allowed
    "http://127.0.0.1:8000/",       # not allowed by default (allow_http_loopback)
    "//app.example/",
    "https:///no-host",
    "https://user:pw@app.example/",
])
async def test_dcr_client_uri_must_be_https(h: Harness, client_uri: str) -> None:
    r = await _register(h, {"redirect_uris": ["https://app.example/cb"],
                            "token_endpoint_auth_method": "none", "client_uri": client_uri})
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_client_metadata"
    assert await h.store.list_clients() == []


async def test_dcr_https_client_uri_is_kept(h: Harness) -> None:
    r = await _register(h, {"redirect_uris": ["https://app.example/cb"],
                            "token_endpoint_auth_method": "none",
                            "client_uri": "https://app.example/about"})
    assert r.status_code == 201 and r.json()["client_uri"] == "https://app.example/about"


@pytest.fixture
async def h_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path, monkeypatch, allow_http_loopback=True):
        yield harness


async def test_dcr_loopback_http_client_uri_only_where_allowed(h_loopback: Harness) -> None:
    r = await _register(h_loopback, {"redirect_uris": ["http://127.0.0.1:8000/cb"],
                                     "token_endpoint_auth_method": "none",
                                     "client_uri": "http://127.0.0.1:8000/"})
    assert r.status_code == 201, r.text
    r = await _register(h_loopback, {"redirect_uris": ["http://127.0.0.1:8000/cb"],
                                     "token_endpoint_auth_method": "none",
                                     "client_uri": "http://app.example/"})
    assert r.json()["error"] == "invalid_client_metadata"
