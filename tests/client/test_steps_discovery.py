"""Pure steps: the challenge, discovery URL order and metadata validation (CL-02..CL-07,
CL-31, CL-37), with the checklist's worked examples as data."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.client.challenge import Challenge, parse_challenge
from bastion.client.discovery import (
    as_metadata_urls,
    legacy_default_metadata,
    legacy_metadata_urls,
    prm_urls,
    resource_matches,
    validate_as_metadata,
    validate_prm,
)
from bastion.client.errors import MetadataError
from bastion.net.policy import FetchPolicy

SECURE = FetchPolicy()
DEV = FetchPolicy(allow_http_loopback=True)
PRM_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp"


# --- the challenge (CL-02) ---------------------------------------------------------------

@pytest.mark.parametrize("header", [
    f'Bearer resource_metadata="{PRM_URL}", scope="files:read"',
    f'Bearer scope="files:read",resource_metadata="{PRM_URL}"',
    f'Bearer realm="a, b", scope="files:read",\r\n   resource_metadata="{PRM_URL}"',
    f'Basic realm="x", Bearer scope="files:read", resource_metadata="{PRM_URL}"',
])
def test_challenge_parameters_in_any_order_quoted_folded_or_after_another_scheme(
        header: str) -> None:
    challenge = parse_challenge([header])
    assert challenge == Challenge("bearer", None, ("files:read",), PRM_URL)


def test_insufficient_scope_challenge_with_several_scopes() -> None:
    challenge = parse_challenge([
        'Bearer error="insufficient_scope", scope="files:write files:read", '
        'error_description="File write permission required"'])
    assert challenge is not None and challenge.insufficient_scope
    assert challenge.scopes == ("files:read", "files:write")


def test_no_bearer_challenge_and_invalid_scope_characters() -> None:
    assert parse_challenge([]) is None
    assert parse_challenge(['Basic realm="x"']) is None
    challenge = parse_challenge(['Bearer scope="a\\"b"'])
    assert challenge is not None and challenge.scopes is None


@given(st.text(max_size=200))
def test_challenge_parser_never_raises(header: str) -> None:
    parse_challenge([header])


# --- PRM (CL-03, CL-04) --------------------------------------------------------------------

def test_prm_url_from_the_challenge_is_the_only_one_tried() -> None:
    challenge = Challenge("bearer", resource_metadata="https://mcp.example.com/custom.json")
    assert prm_urls("https://mcp.example.com/public/mcp", challenge) == [
        "https://mcp.example.com/custom.json"]


@pytest.mark.parametrize(("server", "expected"), [
    ("https://mcp.example.com/public/mcp", [PRM_URL,
                                            "https://mcp.example.com/.well-known/oauth-protected-resource"]),
    ("https://mcp.example.com", ["https://mcp.example.com/.well-known/oauth-protected-resource"]),
])
def test_prm_urls_path_aware_then_root(server: str, expected: list[str]) -> None:
    assert prm_urls(server, None) == expected
    assert prm_urls(server, Challenge("bearer")) == expected


@pytest.mark.parametrize(("published", "server", "ok"), [
    ("https://mcp.example.com/public/mcp", "https://mcp.example.com/public/mcp", True),
    ("https://MCP.example.com/public/mcp/", "https://mcp.example.com/public/mcp", True),
    ("https://mcp.example.com", "https://mcp.example.com/public/mcp", True),
    ("https://mcp.example.com/public", "https://mcp.example.com/public/mcp", True),
    ("https://mcp.example.com/pub", "https://mcp.example.com/public/mcp", False),
    ("https://evil.example.com/public/mcp", "https://mcp.example.com/public/mcp", False),
    ("https://mcp.example.com:8443/public/mcp", "https://mcp.example.com/public/mcp", False),
    ("http://mcp.example.com/public/mcp", "https://mcp.example.com/public/mcp", False),
    ("https://mcp.example.com/public/mcp/more", "https://mcp.example.com/public/mcp", False),
    ("not a url", "https://mcp.example.com/public/mcp", False),
])
def test_prm_resource_must_name_this_server(published: str, server: str, ok: bool) -> None:
    assert resource_matches(published, server) is ok


def test_validate_prm_keeps_the_resource_as_published() -> None:
    prm = validate_prm({"resource": "http://localhost:1234", "authorization_servers": ["a"],
                        "scopes_supported": ["x"]}, "http://localhost:1234/mcp")
    assert prm.resource == "http://localhost:1234"
    assert prm.authorization_servers == ("a",) and prm.scopes_supported == ("x",)


@pytest.mark.parametrize("doc", [
    {"resource": "https://evil.example.com/mcp", "authorization_servers": ["https://as"]},
    {"authorization_servers": ["https://as"]},
    {"resource": "https://mcp.example.com/mcp"},
    {"resource": "https://mcp.example.com/mcp", "authorization_servers": []},
    {"resource": "https://mcp.example.com/mcp", "authorization_servers": [1]},
    {"resource": "https://mcp.example.com/mcp", "authorization_servers": ["https://as"],
     "scopes_supported": "a b"},
])
def test_unusable_prm_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(MetadataError):
        validate_prm(doc, "https://mcp.example.com/mcp")


# --- AS metadata (CL-05..CL-07, CL-31) ----------------------------------------------------

@pytest.mark.parametrize(("issuer", "urls"), [
    ("https://auth.example.com/tenant1", [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration"]),
    ("https://auth.example.com/tenant1/", [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration"]),
    ("https://auth.example.com", [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration"]),
])
def test_as_metadata_urls_in_exact_priority_order(issuer: str, urls: list[str]) -> None:
    assert as_metadata_urls(issuer) == urls


@pytest.mark.parametrize("issuer", ["ftp://auth.example.com", "https://a.example/x?y=1",
                                    "https://a.example/x#f", "auth.example.com"])
def test_unusable_issuer_identifiers(issuer: str) -> None:
    with pytest.raises(MetadataError):
        as_metadata_urls(issuer)


def as_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": "https://auth.example.com/tenant1",
        "authorization_endpoint": "https://auth.example.com/tenant1/authorize",
        "token_endpoint": "https://auth.example.com/tenant1/token",
        "registration_endpoint": "https://auth.example.com/tenant1/register",
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "scopes_supported": ["files:read", "offline_access"],
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def test_checklist_metadata_sample_is_accepted() -> None:
    meta = validate_as_metadata(as_doc(), "https://auth.example.com/tenant1", SECURE)
    assert meta.iss_parameter_supported and meta.client_id_metadata_document_supported
    assert meta.code_challenge_methods_supported == ("S256",)


@pytest.mark.parametrize("issuer", ["https://honest.example", "https://auth.example.com/tenant1/",
                                    "https://AUTH.example.com/tenant1"])
def test_metadata_issuer_must_equal_byte_for_byte(issuer: str) -> None:
    with pytest.raises(MetadataError, match="issuer"):
        validate_as_metadata(as_doc(issuer=issuer), "https://auth.example.com/tenant1", SECURE)


@pytest.mark.parametrize(("field", "url"), [
    ("token_endpoint", "http://auth.example.com/token"),
    ("authorization_endpoint", "http://auth.example.com/authorize"),
    ("registration_endpoint", "https://10.0.0.1/register"),
    ("token_endpoint", "https://169.254.169.254/token"),
    ("authorization_endpoint", "javascript:alert(1)"),
    ("token_endpoint", "http://127.0.0.1:9/token"),
])
def test_endpoints_must_be_https_and_public(field: str, url: str) -> None:
    with pytest.raises(MetadataError, match="endpoint refused"):
        validate_as_metadata(as_doc(**{field: url}), "https://auth.example.com/tenant1", SECURE)


def test_http_loopback_endpoints_only_with_the_development_policy() -> None:
    doc = as_doc(issuer="http://127.0.0.1:9", token_endpoint="http://127.0.0.1:9/token",
                 authorization_endpoint="http://localhost:9/authorize",
                 registration_endpoint=None)
    assert validate_as_metadata(doc, "http://127.0.0.1:9", DEV).registration_endpoint is None
    with pytest.raises(MetadataError):
        validate_as_metadata(doc, "http://127.0.0.1:9", SECURE)


def test_legacy_fallback_uses_the_server_origin() -> None:
    assert legacy_metadata_urls("https://MCP.example.com/public/mcp") == (
        "https://mcp.example.com",
        "https://mcp.example.com/.well-known/oauth-authorization-server")
    meta = legacy_default_metadata("https://mcp.example.com/public/mcp", SECURE)
    assert (meta.authorization_endpoint, meta.token_endpoint, meta.registration_endpoint) == (
        "https://mcp.example.com/authorize", "https://mcp.example.com/token",
        "https://mcp.example.com/register")
    assert meta.legacy and meta.code_challenge_methods_supported == ("S256",)
