"""Token endpoint: PKCE verification, code single use, refresh rotation and reuse detection,
resource narrowing, client_credentials, revocation and introspection."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest

from tests.server.conftest import (
    CONFIDENTIAL_CLIENT,
    CONFIDENTIAL_SECRET,
    OTHER_RESOURCE,
    RESOURCE,
    Harness,
    pkce_pair,
)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def _tokens(h: Harness) -> dict[str, str]:
    code, verifier, _ = await h.get_code()
    r = await h.exchange(code, verifier)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _introspect(h: Harness, token: str) -> dict[str, object]:
    r = await h.http.post("/introspect", data={"token": token},
                          headers=basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_as05_wrong_verifier_is_invalid_grant(h: Harness) -> None:
    code, _, _ = await h.get_code()
    other_verifier, _ = pkce_pair()
    r = await h.exchange(code, other_verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert r.headers["cache-control"] == "no-store"


async def test_as05_missing_verifier_is_invalid_request(h: Harness) -> None:
    code, _, _ = await h.get_code()
    r = await h.http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                          "client_id": "demo",
                                          "redirect_uri": "http://localhost:3000/callback"})
    assert r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " "])
async def test_as05_code_verifier_with_trailing_whitespace_is_malformed(
    h: Harness, suffix: str
) -> None:
    """Even when the challenge was made from the same string: a verifier is 43..128
    characters of the RFC 7636 alphabet, nothing after them."""
    verifier = secrets.token_urlsafe(48) + suffix
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    code, _, _ = await h.get_code(code_challenge=challenge)
    r = await h.exchange(code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert "malformed" in r.json()["error_description"]


async def test_code_redirect_uri_mismatch_is_invalid_grant(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    r = await h.exchange(code, verifier, redirect_uri="https://app.example/cb?x=1")
    assert r.json()["error"] == "invalid_grant"


async def test_code_replay_is_refused_and_revokes_what_it_produced(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    first = (await h.exchange(code, verifier)).json()
    assert (await _introspect(h, first["access_token"]))["active"] is True
    r = await h.exchange(code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # the refresh token and the access token the code produced are revoked
    assert (await h.refresh(first["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await _introspect(h, first["access_token"]))["active"] is False


async def test_code_redeemed_by_another_client_is_invalid_grant(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    r = await h.exchange(code, verifier, client_id="other",
                         redirect_uri="http://127.0.0.1:4000/cb")
    assert r.json()["error"] == "invalid_grant"
    # and the code is burnt for the real client too
    assert (await h.exchange(code, verifier)).json()["error"] == "invalid_grant"


async def test_expired_code_is_invalid_grant(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    h.clock.advance(61)
    assert (await h.exchange(code, verifier)).json()["error"] == "invalid_grant"


async def test_code_with_different_resource_is_invalid_target(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    r = await h.exchange(code, verifier, resource=OTHER_RESOURCE)
    assert r.json()["error"] == "invalid_target"


async def test_as21_refresh_rotation_issues_new_token(h: Harness) -> None:
    t1 = await _tokens(h)
    r = await h.refresh(t1["refresh_token"])
    assert r.status_code == 200, r.text
    t2 = r.json()
    assert t2["refresh_token"] != t1["refresh_token"]
    assert r.headers["cache-control"] == "no-store"
    assert (await h.refresh(t2["refresh_token"])).status_code == 200


async def test_as21_refresh_rotation_reuse_revokes_family(h: Harness) -> None:
    t1 = await _tokens(h)
    t2 = (await h.refresh(t1["refresh_token"])).json()
    h.clock.advance(11)  # past the 10 s grace window
    r = await h.refresh(t1["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # the whole family is gone, including the honest successor and its access token
    assert (await h.refresh(t2["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await _introspect(h, t2["access_token"]))["active"] is False


async def test_as21_refresh_retry_within_grace_window_succeeds(h: Harness) -> None:
    t1 = await _tokens(h)
    t2 = (await h.refresh(t1["refresh_token"])).json()
    h.clock.advance(5)
    r = await h.refresh(t1["refresh_token"])
    assert r.status_code == 200, r.text
    t3 = r.json()
    assert t3["refresh_token"] not in (t1["refresh_token"], t2["refresh_token"])
    assert (await h.refresh(t3["refresh_token"])).status_code == 200


async def test_refresh_by_another_client_is_invalid_grant(h: Harness) -> None:
    t1 = await _tokens(h)
    assert (await h.refresh(t1["refresh_token"], client_id="other")).json()["error"] == (
        "invalid_grant"
    )
    assert (await h.refresh(t1["refresh_token"])).status_code == 200  # not burnt


async def test_refresh_resource_widened_is_invalid_target(h: Harness) -> None:
    t1 = await _tokens(h)
    r = await h.refresh(t1["refresh_token"], resource=OTHER_RESOURCE)
    assert r.json()["error"] == "invalid_target"
    r = await h.refresh(t1["refresh_token"], resource="https://as.test/unknown")
    assert r.json()["error"] == "invalid_target"


async def test_refresh_same_resource_and_narrower_scope(h: Harness) -> None:
    code, verifier, _ = await h.get_code(scope="mcp:read mcp:write")
    t1 = (await h.exchange(code, verifier)).json()
    r = await h.refresh(t1["refresh_token"], resource=RESOURCE, scope="mcp:read")
    assert r.status_code == 200 and r.json()["scope"] == "mcp:read"
    r = await h.refresh(r.json()["refresh_token"], scope="mcp:read mcp:write profile")
    assert r.json()["error"] == "invalid_scope"


async def test_as01_password_grant_is_unsupported(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "password", "client_id": "demo",
                                          "username": "alice", "password": "x"})
    assert r.json()["error"] == "unsupported_grant_type"


async def test_unknown_public_client_is_invalid_client(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "authorization_code", "client_id": "zz",
                                          "code": "x", "code_verifier": "y" * 43,
                                          "redirect_uri": "http://localhost:3000/callback"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_client_credentials_with_basic_auth(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "client_credentials",
                                          "resource": RESOURCE, "scope": "mcp:read"},
                          headers=basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert r.status_code == 200, r.text
    assert "refresh_token" not in r.json()


async def test_client_credentials_with_post_auth(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "client_credentials",
                                          "resource": RESOURCE, "client_id": CONFIDENTIAL_CLIENT,
                                          "client_secret": CONFIDENTIAL_SECRET})
    assert r.status_code == 200, r.text


async def test_client_credentials_wrong_secret_is_401_with_basic_challenge(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "client_credentials",
                                          "resource": RESOURCE},
                          headers=basic(CONFIDENTIAL_CLIENT, "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic")


async def test_client_credentials_for_public_client_is_refused(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "client_credentials",
                                          "resource": RESOURCE, "client_id": "demo"})
    assert r.json()["error"] == "unauthorized_client"


async def test_client_credentials_needs_configured_resource(h: Harness) -> None:
    r = await h.http.post("/token", data={"grant_type": "client_credentials"},
                          headers=basic(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert r.json()["error"] == "invalid_target"


async def test_rfc7009_revoke_refresh_token(h: Harness) -> None:
    t1 = await _tokens(h)
    r = await h.http.post("/revoke", data={"token": t1["refresh_token"], "client_id": "demo"})
    assert r.status_code == 200
    assert (await h.refresh(t1["refresh_token"])).json()["error"] == "invalid_grant"


async def test_rfc7009_revoke_access_token_and_unknown_token(h: Harness) -> None:
    t1 = await _tokens(h)
    r = await h.http.post("/revoke", data={"token": t1["access_token"], "client_id": "demo"})
    assert r.status_code == 200
    assert (await _introspect(h, t1["access_token"]))["active"] is False
    r = await h.http.post("/revoke", data={"token": "nonsense", "client_id": "demo"})
    assert r.status_code == 200


async def test_rfc7009_revoke_by_other_client_has_no_effect(h: Harness) -> None:
    t1 = await _tokens(h)
    r = await h.http.post("/revoke", data={"token": t1["refresh_token"], "client_id": "other"})
    assert r.status_code == 200
    assert (await h.refresh(t1["refresh_token"])).status_code == 200


async def test_rfc7662_introspection_active_token(h: Harness) -> None:
    t1 = await _tokens(h)
    body = await _introspect(h, t1["access_token"])
    assert body["active"] is True and body["aud"] == RESOURCE and body["client_id"] == "demo"
    assert body["scope"] == "mcp:read" and body["sub"] == "sub-alice"
    h.clock.advance(901)
    assert (await _introspect(h, t1["access_token"]))["active"] is False


@pytest.mark.parametrize("auth", ["none", "public"])
async def test_rfc7662_introspection_needs_authenticated_caller(h: Harness, auth: str) -> None:
    data = {"token": "x"} if auth == "none" else {"token": "x", "client_id": "demo"}
    r = await h.http.post("/introspect", data=data)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
