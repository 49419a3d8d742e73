"""Login and consent pages: CSRF, framing headers, cookies, warnings, repeated GETs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server.conftest import REDIRECT, Harness, hidden, query_of

CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
       "frame-ancestors 'none'")


async def _to_consent(h: Harness, **overrides: str | None) -> str:
    params, _ = h.authorize_params(**overrides)
    r = await h.http.get("/authorize", params=params)
    if r.headers["location"].startswith("/login"):
        r = await h.login(r.headers["location"])
    assert r.status_code == 303
    assert r.headers["location"].startswith("/consent")
    return r.headers["location"]


async def test_bp03_framing_headers_on_login_and_consent(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    login = await h.http.get(r.headers["location"])
    for page in (login, await h.http.get(await _to_consent(h))):
        # form-action admits exactly the pending request's redirect origin, nothing else.
        assert page.headers["content-security-policy"] == CSP.replace(
            "form-action 'self'", "form-action 'self' http://localhost:3000")
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script" not in page.text


async def test_bp04_cookies_are_host_prefixed_secure_httponly_lax(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    cookies = r.headers.get_list("set-cookie")
    r = await h.login(r.headers["location"])
    cookies += r.headers.get_list("set-cookie")
    assert len(cookies) == 2
    for c in cookies:
        low = c.lower()
        assert c.startswith("__Host-")
        assert "secure" in low and "httponly" in low and "samesite=lax" in low
        assert "path=/" in low and "domain" not in low


async def test_bp03_consent_post_without_csrf_is_403(h: Harness) -> None:
    page = await h.http.get(await _to_consent(h))
    r = await h.http.post("/consent", data={"request": hidden(page.text, "request"),
                                            "decision": "approve"})
    assert r.status_code == 403 and "location" not in r.headers


async def test_bp03_consent_post_with_stale_csrf_is_403(h: Harness) -> None:
    stale = hidden((await h.http.get(await _to_consent(h))).text, "csrf")
    page = await h.http.get(await _to_consent(h, state="second"))
    r = await h.http.post("/consent", data={"request": hidden(page.text, "request"),
                                            "csrf": stale, "decision": "approve"})
    assert r.status_code == 403 and "location" not in r.headers


async def test_login_post_without_csrf_is_403(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    page = await h.http.get(r.headers["location"])
    r = await h.http.post("/login", data={"request": hidden(page.text, "request"),
                                          "username": "alice", "password": "x"})
    assert r.status_code == 403


async def test_pending_request_is_bound_to_the_browser(h: Harness) -> None:
    location = await _to_consent(h)
    page = await h.http.get(location)
    h.http.cookies.delete("__Host-bastion-browser")
    h.http.cookies.set("__Host-bastion-browser", "someone-else", domain="as.test")
    r = await h.http.post("/consent", data={"request": hidden(page.text, "request"),
                                            "csrf": hidden(page.text, "csrf"),
                                            "decision": "approve"})
    assert r.status_code == 403


async def test_repeated_get_keeps_pending_approval_valid(h: Harness) -> None:
    location = await _to_consent(h)
    first = await h.http.get(location)
    second = await h.http.get(location)
    assert hidden(first.text, "csrf") == hidden(second.text, "csrf")
    r = await h.http.post("/consent", data={"request": hidden(first.text, "request"),
                                            "csrf": hidden(first.text, "csrf"),
                                            "decision": "approve"})
    assert r.status_code == 303 and "code" in query_of(r.headers["location"])
    # a second submission of the same form cannot produce a second code
    again = await h.http.post("/consent", data={"request": hidden(first.text, "request"),
                                                "csrf": hidden(first.text, "csrf"),
                                                "decision": "approve"})
    assert again.status_code == 400 and "location" not in again.headers


async def test_as13_consent_page_shows_client_redirect_host_scopes_and_warnings(
    h: Harness,
) -> None:
    page = await h.http.get(await _to_consent(h, client_id="noref", scope="mcp:read mcp:write"))
    text = page.text
    assert "No refresh" in text
    assert "localhost" in text and "Local application" in text
    assert "mcp:read" in text and "mcp:write" in text
    assert "https://as.test/mcp" in text
    assert "Unverified application" not in text  # configured client
    mixed = await h.http.get(await _to_consent(h))  # demo also has an https redirect URI
    assert "Local application" not in mixed.text


async def test_bp07_no_session_cookie_before_login(h: Harness) -> None:
    params, _ = h.authorize_params()
    r = await h.http.get("/authorize", params=params)
    assert all("session" not in c for c in r.headers.get_list("set-cookie"))
    assert r.headers["location"].startswith("/login")
    assert not r.headers["location"].startswith(REDIRECT)


async def _consent_page_for(h: Harness, redirect: str) -> Any:
    r = await h.http.post("/register", json={"redirect_uris": [redirect],
                                             "token_endpoint_auth_method": "none"})
    assert r.status_code == 201, r.text
    params, _ = h.authorize_params(client_id=r.json()["client_id"], redirect_uri=redirect)
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"])
    return await h.http.get(r.headers["location"])


@pytest.mark.parametrize(("host", "punycode"), [
    ("аpple.com", "xn--pple-43d.com"),          # Cyrillic а
    ("pаypal.example", "xn--pypal-4ve.example"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("faß.de", "xn--fa-hia.de"),                # the name browsers go to, not "fass.de"
])
async def test_consent_shows_the_punycode_of_an_international_redirect_host(
    h: Harness, host: str, punycode: str
) -> None:
    """A homograph host looks like the real one in Unicode: its IDNA form is shown beside
    it, and is what the form-action source names."""
    page = await _consent_page_for(h, f"https://{host}/cb")
    assert page.status_code == 200
    sent_back = page.text.split("You will be sent back to")[1].split("</dd>")[0]
    assert host in sent_back and punycode in sent_back
    assert f"form-action 'self' https://{punycode}" in page.headers["content-security-policy"]


async def test_consent_shows_an_ascii_redirect_host_once(h: Harness) -> None:
    page = await _consent_page_for(h, "https://app.example/cb")
    sent_back = page.text.split("You will be sent back to")[1].split("</dd>")[0]
    assert "international" not in sent_back and sent_back.count("app.example") == 2


async def test_consent_shows_the_punycode_of_an_international_cimd_host(h: Harness) -> None:
    cid = "https://аpp.example/client.json"
    h.fetcher.documents[cid] = (200, {}, json.dumps({
        "client_id": cid, "client_name": "App", "redirect_uris": [REDIRECT]}).encode())
    params, _ = h.authorize_params(client_id=cid)
    r = await h.http.get("/authorize", params=params)
    r = await h.login(r.headers["location"])
    page = await h.http.get(r.headers["location"])
    identity = page.text.split("Application identifier host")[1].split("</dd>")[0]
    assert "аpp.example" in identity and "xn--pp-6kc.example" in identity
