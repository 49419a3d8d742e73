"""Pure steps: scopes, registration choice, the authorization request and its response,
token request bodies (CL-09..CL-30, CL-35, CL-36)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.client.authorization import (
    PendingAuthorization,
    begin_authorization,
    check_authorization_url,
    validate_callback,
)
from bastion.client.challenge import Challenge
from bastion.client.discovery import AuthorizationServerMetadata, ResourceMetadata
from bastion.client.errors import (
    AuthorizationResponseError,
    MetadataError,
    RegistrationError,
    TokenEndpointError,
    UnsafeAuthorizationUrl,
)
from bastion.client.registration import (
    ClientCredentials,
    ClientProfile,
    DynamicRegistration,
    choose_registration,
    dcr_request,
    parse_dcr_response,
)
from bastion.client.scope_choice import (
    StepUpBudget,
    initial_scopes,
    step_up_scopes,
    with_offline_access,
)
from bastion.client.token_requests import (
    TokenSet,
    authorization_code_form,
    client_authentication,
    parse_token_response,
    refresh_form,
)
from bastion.oauth.rfc7636 import s256_challenge

ISSUER = "https://auth.example.com/tenant1"
RESOURCE = "https://mcp.example.com/public/mcp"
REDIRECT = "http://127.0.0.1:3000/callback"
CIMD = "https://app.example.com/oauth/client-metadata.json"


def meta(**overrides: Any) -> AuthorizationServerMetadata:
    values: dict[str, Any] = dict(
        issuer=ISSUER, token_endpoint=ISSUER + "/token",
        authorization_endpoint=ISSUER + "/authorize", registration_endpoint=ISSUER + "/register",
        code_challenge_methods_supported=("S256",),
        token_endpoint_auth_methods_supported=("none", "client_secret_basic"),
        iss_parameter_supported=True, client_id_metadata_document_supported=True,
        scopes_supported=("files:read", "offline_access"))
    values.update(overrides)
    return AuthorizationServerMetadata(**values)


# --- scopes (CL-09..CL-14, CL-35) -----------------------------------------------------------

PRM = ResourceMetadata(RESOURCE, (ISSUER,), ("mcp:read", "mcp:basic"))


def test_initial_scope_choice_order() -> None:
    assert initial_scopes(Challenge("bearer", scopes=("x:y",)), PRM) == ("x:y",)  # CL-10
    assert initial_scopes(Challenge("bearer"), PRM) == ("mcp:basic", "mcp:read")
    assert initial_scopes(None, ResourceMetadata(RESOURCE, (ISSUER,))) is None


def test_offline_access_only_when_the_as_lists_it() -> None:
    assert with_offline_access(("a",), meta(), wanted=True) == ("a", "offline_access")
    assert with_offline_access(("a",), meta(scopes_supported=("a",)), wanted=True) == ("a",)
    assert with_offline_access(("a",), meta(scopes_supported=None), wanted=True) == ("a",)
    assert with_offline_access(("a",), meta(), wanted=False) == ("a",)
    assert with_offline_access(None, meta(), wanted=True) is None


def test_step_up_is_the_union_and_the_budget_is_per_operation() -> None:
    assert step_up_scopes(("mcp:basic",), ("mcp:write",)) == ("mcp:basic", "mcp:write")
    assert step_up_scopes(None, None) is None
    budget = StepUpBudget(limit=2)
    assert budget.take(RESOURCE, "tools/call x") and budget.take(RESOURCE, "tools/call x")
    assert not budget.take(RESOURCE, "tools/call x")
    assert budget.take(RESOURCE, "tools/call y")
    budget.succeeded(RESOURCE, "tools/call x")
    assert budget.take(RESOURCE, "tools/call x")


# --- registration (CL-15..CL-21) -----------------------------------------------------------

PRE = ClientCredentials(issuer=ISSUER, client_id="pre", client_secret="s",
                        auth_method="client_secret_basic")


def test_registration_priority() -> None:
    with_cimd = ClientProfile(client_metadata_url=CIMD, pre_registered=(PRE,))
    assert choose_registration(with_cimd, meta(), None) is PRE
    stored = ClientCredentials(issuer=ISSUER, client_id="dcr")
    assert choose_registration(ClientProfile(client_metadata_url=CIMD), meta(), stored) is stored
    cimd = choose_registration(ClientProfile(client_metadata_url=CIMD), meta(), None)
    assert isinstance(cimd, ClientCredentials) and cimd.client_id == CIMD and cimd.portable
    no_flag = meta(client_id_metadata_document_supported=False)
    assert choose_registration(ClientProfile(client_metadata_url=CIMD), no_flag, None) == (
        DynamicRegistration(ISSUER + "/register"))


def test_credentials_of_another_issuer_are_never_used() -> None:
    other = ClientCredentials(issuer="https://as-a.example", client_id="a-client")
    profile = ClientProfile(pre_registered=(other,))
    assert choose_registration(profile, meta(), other) == DynamicRegistration(
        ISSUER + "/register")
    with pytest.raises(RegistrationError, match=r"only for https://as-a\.example"):
        choose_registration(profile, meta(registration_endpoint=None), None)


@pytest.mark.parametrize("url", ["http://app.example.com/client.json", "https://app.example.com",
                                 "https://app.example.com/", "https://app.example.com/a#f"])
def test_cimd_url_must_be_https_with_a_path(url: str) -> None:
    with pytest.raises(ValueError, match="CL-17"):
        ClientProfile(client_metadata_url=url)


def test_dcr_body_and_responses() -> None:
    body = dcr_request(ClientProfile(), REDIRECT, meta())
    assert body["application_type"] == "native"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["redirect_uris"] == [REDIRECT] and body["token_endpoint_auth_method"] == "none"
    creds = parse_dcr_response(201, {"client_id": "c", "client_secret": "s"},
                               meta(token_endpoint_auth_methods_supported=("none",)))
    assert creds.auth_method == "none" and creds.issuer == ISSUER
    creds = parse_dcr_response(201, {"client_id": "c", "client_secret": "s"}, meta())
    assert creds.auth_method == "client_secret_basic"
    with pytest.raises(RegistrationError, match=r"HTTP 400, invalid_redirect_uri: bad uri"):
        parse_dcr_response(400, {"error": "invalid_redirect_uri", "error_description": "bad uri"},
                           meta())


# --- the authorization request (CL-22..CL-26, CL-36) ---------------------------------------

CLIENT = ClientCredentials(issuer=ISSUER, client_id=CIMD, portable=True)


def start(**overrides: Any) -> tuple[str, PendingAuthorization]:
    return begin_authorization(meta(**overrides), CLIENT, redirect_uri=REDIRECT,
                               resource=RESOURCE, scopes=("files:read",))


def test_authorization_url_has_pkce_state_resource_and_the_pending_record_the_issuer() -> None:
    url, pending = start()
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(ISSUER + "/authorize?")
    assert query["code_challenge_method"] == "S256"
    assert query["code_challenge"] == s256_challenge(pending.code_verifier)
    assert query["state"] == pending.state and query["resource"] == RESOURCE
    assert query["scope"] == "files:read" and query["client_id"] == CIMD
    assert pending.issuer == ISSUER and pending.iss_required
    assert "resource=https%3A%2F%2Fmcp.example.com%2Fpublic%2Fmcp" in url
    assert pending.code_verifier not in repr(pending) and pending.state not in repr(pending)


@pytest.mark.parametrize("methods", [(), ("plain",)])
def test_no_authorization_without_s256(methods: tuple[str, ...]) -> None:
    with pytest.raises(MetadataError, match="S256"):
        start(code_challenge_methods_supported=methods)


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "data:text/html,x", "file:///etc/passwd", "vbscript:x",
    "https://a.example/$(id)", "https://a.example/`id`", "https://a.example/a;b",
    "https://a.example/a b", "http://a.example/authorize", "https://user@a.example/x",
    "https:///nohost",
])
def test_unsafe_authorization_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeAuthorizationUrl):
        check_authorization_url(url, allow_http_loopback=True)


def test_http_authorization_url_only_to_loopback_in_development() -> None:
    for url in ("http://127.0.0.1:1/authorize", "http://localhost:1/authorize",
                "http://[::1]:1/authorize"):
        assert check_authorization_url(url, allow_http_loopback=True) == url
        with pytest.raises(UnsafeAuthorizationUrl):
            check_authorization_url(url)
    with pytest.raises(UnsafeAuthorizationUrl):
        check_authorization_url("http://0x7f000001/authorize", allow_http_loopback=True)


# --- the authorization response (CL-27..CL-30) ---------------------------------------------

def pending(iss_required: bool) -> PendingAuthorization:
    return PendingAuthorization(issuer=ISSUER, client_id="c", redirect_uri=REDIRECT,
                                resource=RESOURCE, scopes=None, state="st",
                                code_verifier="v" * 43, iss_required=iss_required)


@pytest.mark.parametrize(("advertised", "iss", "ok"), [
    (True, ISSUER, True),            # iss-supported
    (True, None, False),             # iss-supported-missing
    (False, ISSUER, True),           # compare even when not advertised
    (False, None, True),             # iss-not-advertised
    (False, "https://evil.example.com", False),  # iss-unexpected
    (True, "https://evil.example.com", False),   # iss-wrong-issuer
    (True, ISSUER + "/", False),     # iss-normalized: no trailing-slash normalisation
    (True, "https://AUTH.example.com/tenant1", False),
    (True, "https://auth.example.com:443/tenant1", False),
    (True, "https://auth.example.com/tenant%31", False),
])
def test_rfc9207_iss_table(advertised: bool, iss: str | None, ok: bool) -> None:
    params = {"code": "abc", "state": "st", **({"iss": iss} if iss is not None else {})}
    if ok:
        assert validate_callback(pending(advertised), params) == "abc"
    else:
        with pytest.raises(AuthorizationResponseError):
            validate_callback(pending(advertised), params)


def test_nothing_from_the_server_is_shown_when_iss_does_not_match() -> None:
    params = {"state": "st", "iss": "https://evil.example.com", "error": "access_denied",
              "error_description": "<script>alert(1)</script>", "error_uri": "https://x"}
    with pytest.raises(AuthorizationResponseError) as caught:
        validate_callback(pending(True), params)
    assert caught.value.error is None
    assert "script" not in str(caught.value) and "access_denied" not in str(caught.value)


def test_error_is_reported_once_iss_and_state_match() -> None:
    with pytest.raises(AuthorizationResponseError, match="access_denied") as caught:
        validate_callback(pending(True), {"state": "st", "iss": ISSUER, "error": "access_denied"})
    assert caught.value.error == "access_denied"


@pytest.mark.parametrize("state", [None, "wrong", ""])
def test_wrong_or_missing_state_is_discarded(state: str | None) -> None:
    params = {"code": "abc", "iss": ISSUER, **({"state": state} if state is not None else {})}
    with pytest.raises(AuthorizationResponseError, match="state"):
        validate_callback(pending(True), params)


# --- token requests (CL-24) -------------------------------------------------------------------

def test_code_and_refresh_forms_carry_the_resource() -> None:
    form = authorization_code_form(pending(True), "abc")
    assert form["resource"] == RESOURCE and form["code_verifier"] == "v" * 43
    assert refresh_form("rt", RESOURCE) == {"grant_type": "refresh_token",
                                            "refresh_token": "rt", "resource": RESOURCE}


def test_client_authentication_methods() -> None:
    basic = ClientCredentials(ISSUER, "id:1", "s e/cret", "client_secret_basic")
    form, headers = client_authentication({"a": "b"}, basic, issuer=ISSUER, now=0)
    assert form == {"a": "b"}
    decoded = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert [unquote(p) for p in decoded.split(":")] == ["id:1", "s e/cret"]
    post = ClientCredentials(ISSUER, "id", "sec", "client_secret_post")
    form, headers = client_authentication({}, post, issuer=ISSUER, now=0)
    assert form == {"client_id": "id", "client_secret": "sec"} and not headers
    public = ClientCredentials(ISSUER, "id", "sec", "none")
    assert client_authentication({}, public, issuer=ISSUER, now=0) == ({"client_id": "id"}, {})


def test_private_key_jwt_assertion() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = ClientCredentials(ISSUER, "machine", auth_method="private_key_jwt",
                              private_key_pem=pem)
    form, _ = client_authentication({}, creds, issuer=ISSUER, now=1000)
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    token = jwt.decode(form["client_assertion"], ECKey.import_key(pem))
    claims = token.claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("machine", "machine", ISSUER)
    assert claims["exp"] - claims["iat"] == 60 and claims["jti"]


def test_token_responses() -> None:
    body = json.dumps({"access_token": "AT-secret", "token_type": "bearer", "expires_in": 60,
                       "refresh_token": "RT-secret", "scope": "b a"}).encode()
    tokens = parse_token_response(200, body, now=1000, requested_scopes=("a",))
    assert (tokens.token_type, tokens.expires_at, tokens.scopes) == ("Bearer", 1060, ("a", "b"))
    assert tokens.expired(1031) and not tokens.expired(1029)
    assert "secret" not in repr(tokens)
    kept = parse_token_response(200, b'{"access_token": "at2"}', now=0, requested_scopes=None,
                                previous_refresh_token="rt")
    assert kept.refresh_token == "rt" and kept.expires_at is None
    assert TokenSet.from_json(tokens.to_json()) == tokens


@pytest.mark.parametrize(("status", "body", "error"), [
    (400, b'{"error": "invalid_grant", "error_description": "expired"}', "invalid_grant"),
    (500, b"<html>", "invalid_response"),
    (200, b'{"token_type": "Bearer"}', "invalid_response"),
    (200, b'{"access_token": "x", "token_type": "mac"}', "invalid_response"),
    (200, b'{"access_token": ' + b"[" * 5000 + b"]" * 5000 + b"}", "invalid_response"),
    (200, b'{"access_token": "x", "access_token": "y", "token_type": "Bearer"}',
     "invalid_response"),
])
def test_token_errors(status: int, body: bytes, error: str) -> None:
    with pytest.raises(TokenEndpointError) as caught:
        parse_token_response(status, body, now=0, requested_scopes=None)
    assert caught.value.error == error
