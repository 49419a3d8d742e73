"""End-to-end flows through the real routes: authorize, login, consent, token, refresh."""

from __future__ import annotations

from joserfc import jwt

from bastion.oauth.rfc9068 import verify_access_token
from tests.server.conftest import ISSUER, REDIRECT, RESOURCE, Harness, hidden, query_of


async def test_full_flow_issues_audience_bound_at_jwt(h: Harness) -> None:
    code, verifier, _ = await h.get_code()
    r = await h.exchange(code, verifier)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] <= 3600  # AS-20
    assert body["scope"] == "mcp:read"
    assert "refresh_token" in body
    header = jwt.decode(body["access_token"], h.keys.public_key_set()).header
    assert header["typ"] == "at+jwt" and header["kid"] == h.keys.current.kid
    p = verify_access_token(body["access_token"], h.keys.public_key_set(), issuer=ISSUER,
                            audience=RESOURCE, algorithms=["ES256"], now=h.clock.now())
    assert p.audience == (RESOURCE,)  # AS-24
    assert p.client_id == "demo" and p.subject == "sub-alice"
    assert p.scopes == frozenset({"mcp:read"})


async def test_as22_iss_and_state_on_success_redirect(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"])
    page = await h.http.get(r.headers["location"])
    r = await h.http.post("/consent", data={"request": hidden(page.text, "request"),
                                            "csrf": hidden(page.text, "csrf"),
                                            "decision": "approve"})
    loc = r.headers["location"]
    assert loc.startswith(REDIRECT + "?")
    q = query_of(loc)
    assert q["iss"] == ISSUER and q["state"] == "st-123" and q["code"]


async def test_consent_is_remembered_per_client_resource_scopes(h: Harness) -> None:
    await h.get_code()
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 303 and r.headers["location"].startswith(REDIRECT)  # no prompt
    # a wider scope asks again
    params, _ = h.authorize_params(scope="mcp:read mcp:write")
    r = await h.http.get("/authorize", params=params)
    assert r.headers["location"].startswith("/consent")
    # another client asks again (BP-02)
    params, _ = h.authorize_params(client_id="other", redirect_uri="http://127.0.0.1:4000/cb")
    r = await h.http.get("/authorize", params=params)
    assert r.headers["location"].startswith("/consent")


async def test_deny_redirects_access_denied_with_iss(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"])
    page = await h.http.get(r.headers["location"])
    r = await h.http.post("/consent", data={"request": hidden(page.text, "request"),
                                            "csrf": hidden(page.text, "csrf"),
                                            "decision": "deny"})
    q = query_of(r.headers["location"])
    assert q["error"] == "access_denied" and q["iss"] == ISSUER and q["state"] == "st-123"


async def test_wrong_password_is_refused(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"], password="wrong")
    assert r.status_code == 401
    assert "Wrong username or password" in r.text
