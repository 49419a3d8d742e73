"""RFC 8414 authorization server metadata (and the OIDC discovery document it doubles as)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "OAUTH_WELL_KNOWN",
    "OIDC_WELL_KNOWN",
    "issuer_path",
    "metadata_document",
    "well_known_paths",
]

OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"


def issuer_path(issuer: str) -> str:
    """The path component of the issuer, without a trailing slash ("" for an origin)."""
    return urlsplit(issuer).path.rstrip("/")


def well_known_paths(issuer: str) -> list[str]:
    """Every path the metadata is served at, for an issuer with or without a path.

    RFC 8414 §3.1 inserts the well-known suffix between host and path; OIDC Discovery §4
    appends it; MCP clients try both (checklist §1.1).
    """
    path = issuer_path(issuer)
    paths = [OAUTH_WELL_KNOWN + path, OIDC_WELL_KNOWN + path]
    if path:
        paths.append(path + OIDC_WELL_KNOWN)
    return paths


def metadata_document(
    *,
    issuer: str,
    scopes_supported: Sequence[str],
    token_endpoint_auth_methods: Sequence[str],
    grant_types: Sequence[str],
    registration: bool,
    cimd: bool,
) -> dict[str, Any]:
    base = issuer.rstrip("/")
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": base + "/authorize",
        "token_endpoint": base + "/token",
        "jwks_uri": base + "/jwks.json",
        "revocation_endpoint": base + "/revoke",
        "introspection_endpoint": base + "/introspect",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(grant_types),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(token_endpoint_auth_methods),
        "revocation_endpoint_auth_methods_supported": list(token_endpoint_auth_methods),
        "introspection_endpoint_auth_methods_supported": [
            m for m in token_endpoint_auth_methods if m != "none"
        ],
        "scopes_supported": list(scopes_supported),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": cimd,
        # OIDC discovery fields a client may look for; Bastion issues no ID tokens.
        "subject_types_supported": ["public"],
    }
    if "private_key_jwt" in token_endpoint_auth_methods:
        from bastion.oauth.rfc9068 import ASYMMETRIC_ALGORITHMS

        doc["token_endpoint_auth_signing_alg_values_supported"] = list(ASYMMETRIC_ALGORITHMS)
    if registration:
        doc["registration_endpoint"] = base + "/register"
    return doc
