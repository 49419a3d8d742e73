"""Authorization endpoint: exact redirect URIs, PKCE, resource, scopes, iss on errors."""

from __future__ import annotations

import pytest

from tests.server.conftest import ISSUER, REDIRECT, Harness, query_of


@pytest.mark.parametrize(
    ("name", "uri"),
    [
        ("extra_path", REDIRECT + "/x"),
        ("query", REDIRECT + "?a=1"),
        ("port", "http://localhost:3001/callback"),
        ("scheme", "https://localhost:3000/callback"),
        ("trailing_slash", REDIRECT + "/"),
        ("case", "http://LOCALHOST:3000/callback"),
        ("path_case", "http://localhost:3000/Callback"),
        ("fragment", REDIRECT + "#frag"),
        ("attacker", "https://evil.example/cb"),
    ],
)
async def test_as16_redirect_uri_variant_is_refused_without_redirect(
    h: Harness, name: str, uri: str
) -> None:
    params, _ = h.authorize_params(redirect_uri=uri)
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 400, name
    assert "location" not in r.headers  # AS-17: never sent to an unregistered URI
    assert "invalid_request" in r.text
    assert r.headers["x-frame-options"] == "DENY"


async def test_as16_redirect_uri_with_registered_query_is_kept(h: Harness) -> None:
    params, _ = h.authorize_params(redirect_uri="https://app.example/cb?x=1", scope="mcp:write")
    params["resource"] = "https://nowhere.example/"
    r = await h.http.get("/authorize", params=params)
    q = query_of(r.headers["location"])
    assert q["x"] == "1" and q["error"] == "invalid_target"


async def test_as17_unknown_client_gets_error_page(h: Harness) -> None:
    params, _ = h.authorize_params(client_id="nobody", redirect_uri="https://evil.example/cb")
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 400 and "location" not in r.headers
    assert "invalid_client" in r.text


async def test_repeated_parameter_is_refused_as_page(h: Harness) -> None:
    params, _ = h.authorize_params()
    items = [*params.items(), ("redirect_uri", "https://evil.example/cb")]
    r = await h.http.get("/authorize", params=items)
    assert r.status_code == 400 and "location" not in r.headers


async def _error_redirect(h: Harness, **overrides: str | None) -> dict[str, str]:
    params, _ = h.authorize_params(**overrides)
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 302, r.text
    loc = r.headers["location"]
    assert loc.startswith(REDIRECT + "?")
    q = query_of(loc)
    assert q["iss"] == ISSUER  # AS-22: iss on error responses too
    assert q["state"] == "st-123"
    return q


async def test_as05_pkce_missing_is_refused(h: Harness) -> None:
    q = await _error_redirect(h, code_challenge=None, code_challenge_method=None)
    assert q["error"] == "invalid_request"


async def test_as05_pkce_plain_is_refused(h: Harness) -> None:
    q = await _error_redirect(h, code_challenge_method="plain")
    assert q["error"] == "invalid_request"


async def test_as05_pkce_method_missing_is_refused(h: Harness) -> None:
    q = await _error_redirect(h, code_challenge_method=None)
    assert q["error"] == "invalid_request"


async def test_as01_implicit_grant_is_refused(h: Harness) -> None:
    q = await _error_redirect(h, response_type="token")
    assert q["error"] == "unsupported_response_type"


async def test_as24_resource_missing_is_invalid_target(h: Harness) -> None:
    q = await _error_redirect(h, resource=None)
    assert q["error"] == "invalid_target"


async def test_as24_resource_not_configured_is_invalid_target(h: Harness) -> None:
    q = await _error_redirect(h, resource="https://as.test/unknown")
    assert q["error"] == "invalid_target"


async def test_as24_public_mount_is_not_a_target(h: Harness) -> None:
    q = await _error_redirect(h, resource="https://as.test/open")
    assert q["error"] == "invalid_target"


async def test_resource_uppercase_host_is_canonicalised(h: Harness) -> None:
    code, verifier, _ = await h.get_code(resource="HTTPS://AS.TEST/mcp")
    r = await h.exchange(code, verifier)
    assert r.status_code == 200


async def test_scope_unknown_to_resource_is_invalid_scope(h: Harness) -> None:
    q = await _error_redirect(h, scope="files:read")
    assert q["error"] == "invalid_scope"


async def test_tool_scope_and_offline_access_are_grantable(h: Harness) -> None:
    code, verifier, _ = await h.get_code(scope="mcp:read mcp:write offline_access profile")
    body = (await h.exchange(code, verifier)).json()
    assert set(body["scope"].split()) == {"mcp:read", "mcp:write", "offline_access", "profile"}


async def test_as23_client_without_refresh_grant_gets_no_refresh_token(h: Harness) -> None:
    code, verifier, _ = await h.get_code(client_id="noref")
    body = (await h.exchange(code, verifier, client_id="noref")).json()
    assert "access_token" in body and "refresh_token" not in body


_S256 = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # RFC 7636 Appendix B


@pytest.mark.parametrize("challenge", [
    _S256 + "\n",        # `$` matches before a trailing newline: this one used to pass
    _S256[:-1],          # 42 characters
    _S256 + "A",         # 44 characters
    _S256[:-1] + "=",    # padding
    _S256[:-2] + "+/",   # the standard base64 alphabet
    _S256[:-1] + ".",    # unreserved, but never in an S256 value
    "\n" + _S256,
])
async def test_as05_malformed_code_challenge_is_refused(h: Harness, challenge: str) -> None:
    q = await _error_redirect(h, code_challenge=challenge)
    assert q["error"] == "invalid_request"
    assert "code_challenge" in q["error_description"]


async def test_as05_rfc7636_appendix_b_challenge_is_accepted(h: Harness) -> None:
    params, _ = h.authorize_params(code_challenge=_S256)
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
