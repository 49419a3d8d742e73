"""Steps: which metadata URLs to try, and whether a fetched document may be used.

Protected-resource metadata (RFC 9728) first, then authorization-server metadata (RFC 8414 and
OIDC Discovery) in the exact order of checklist §1.1; the 2025-03-26 fallback (CL-37) last.
Everything here is pure: the fetching is done by the session through the SSRF-safe fetcher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bastion.client.challenge import Challenge
from bastion.client.errors import MetadataError
from bastion.net.policy import FetchError, FetchPolicy, parse_url
from bastion.oauth.rfc8414 import OAUTH_WELL_KNOWN, well_known_paths
from bastion.oauth.rfc8707 import canonical_resource
from bastion.oauth.rfc9728 import metadata_urls_to_try

__all__ = [
    "AuthorizationServerMetadata",
    "ResourceMetadata",
    "as_metadata_urls",
    "check_endpoint",
    "legacy_default_metadata",
    "legacy_metadata_urls",
    "prm_urls",
    "resource_matches",
    "validate_as_metadata",
    "validate_prm",
]


@dataclass(frozen=True, slots=True)
class ResourceMetadata:
    """A validated PRM document. ``resource`` is exactly as published (sent back verbatim)."""

    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AuthorizationServerMetadata:
    """The fields of a validated AS metadata document that the client acts on.

    ``authorization_endpoint`` may be absent for an AS that serves machine clients only; the
    authorization-code step refuses to start without it (and without S256 PKCE).
    """

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None = None
    registration_endpoint: str | None = None
    scopes_supported: tuple[str, ...] | None = None
    code_challenge_methods_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    grant_types_supported: tuple[str, ...] = ("authorization_code", "implicit")
    iss_parameter_supported: bool = False
    client_id_metadata_document_supported: bool = False
    dpop_signing_alg_values_supported: tuple[str, ...] = ()
    legacy: bool = False  # synthesised by the 2025-03-26 fallback, not fetched


# --- protected-resource metadata ---------------------------------------------------------


def prm_urls(server_url: str, challenge: Challenge | None) -> list[str]:
    """CL-03: the challenge's ``resource_metadata`` and nothing else; otherwise path-aware
    well-known, then root."""
    if challenge is not None and challenge.resource_metadata:
        return [challenge.resource_metadata]
    return metadata_urls_to_try(server_url)


def resource_matches(published: str, server_url: str) -> bool:
    """CL-04: the PRM ``resource`` names this server: the same canonical URI, or a same-origin
    parent path of it (the form SDKs accept, e.g. a root PRM for ``/mcp``)."""
    try:
        resource = urlsplit(canonical_resource(published))
        server = urlsplit(canonical_resource(server_url))
    except ValueError:
        return False
    if (resource.scheme, resource.netloc) != (server.scheme, server.netloc):
        return False
    if resource.query and resource.query != server.query:
        return False
    if resource.path == server.path:
        return True
    return resource.path == "" or server.path.startswith(resource.path + "/")


def validate_prm(doc: Mapping[str, Any], server_url: str) -> ResourceMetadata:
    resource = doc.get("resource")
    if not isinstance(resource, str) or not resource:
        raise MetadataError("protected resource metadata has no resource")
    if not resource_matches(resource, server_url):
        raise MetadataError(
            "protected resource metadata is for another resource; not authorizing with it"
        )
    servers = doc.get("authorization_servers")
    if (
        not isinstance(servers, list)
        or not servers
        or not all(isinstance(s, str) and s for s in servers)
    ):
        raise MetadataError("protected resource metadata names no authorization server")
    return ResourceMetadata(resource, tuple(servers), _optional_strings(doc, "scopes_supported"))


# --- authorization-server metadata --------------------------------------------------------


def as_metadata_urls(issuer: str) -> list[str]:
    """CL-06: RFC 8414 path insertion, OIDC path insertion, OIDC path appended (3 URLs for an
    issuer with a path, 2 without); never the root when the issuer has a path."""
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise MetadataError("authorization server issuer is not an http(s) URL")
    if parts.query or parts.fragment:
        raise MetadataError("authorization server issuer has a query or fragment")
    return [urlunsplit((parts.scheme, parts.netloc, p, "", "")) for p in well_known_paths(issuer)]


def check_endpoint(url: str, policy: FetchPolicy) -> str:
    """CL-31: an AS endpoint is https (http only to loopback in development) and not aimed at
    an address the fetcher would refuse."""
    try:
        parse_url(url, policy)
    except FetchError as exc:
        raise MetadataError(f"authorization server endpoint refused: {exc.detail}") from None
    return url


def validate_as_metadata(
    doc: Mapping[str, Any], issuer: str, policy: FetchPolicy
) -> AuthorizationServerMetadata:
    """CL-07 (``issuer`` byte-for-byte equal to the issuer the URL was built from) and CL-31."""
    if doc.get("issuer") != issuer:
        raise MetadataError(
            "authorization server metadata issuer differs from the issuer it was fetched for"
        )
    token_endpoint = doc.get("token_endpoint")
    if not isinstance(token_endpoint, str):
        raise MetadataError("authorization server metadata has no token_endpoint")
    return AuthorizationServerMetadata(
        issuer=issuer,
        token_endpoint=check_endpoint(token_endpoint, policy),
        authorization_endpoint=_optional_endpoint(doc, "authorization_endpoint", policy),
        registration_endpoint=_optional_endpoint(doc, "registration_endpoint", policy),
        scopes_supported=_optional_strings(doc, "scopes_supported"),
        code_challenge_methods_supported=_optional_strings(doc, "code_challenge_methods_supported")
        or (),
        token_endpoint_auth_methods_supported=_optional_strings(
            doc, "token_endpoint_auth_methods_supported"
        )
        or ("client_secret_basic",),
        grant_types_supported=_optional_strings(doc, "grant_types_supported")
        or ("authorization_code", "implicit"),
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
        client_id_metadata_document_supported=doc.get("client_id_metadata_document_supported")
        is True,
        dpop_signing_alg_values_supported=_optional_strings(
            doc, "dpop_signing_alg_values_supported"
        )
        or (),
    )


# --- 2025-03-26 servers without PRM (CL-37) ----------------------------------------------


def _origin(server_url: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))


def legacy_metadata_urls(server_url: str) -> tuple[str, str]:
    """(issuer, metadata URL): the MCP server's origin is the authorization server."""
    origin = _origin(server_url)
    return origin, origin + OAUTH_WELL_KNOWN


def legacy_default_metadata(server_url: str, policy: FetchPolicy) -> AuthorizationServerMetadata:
    """No metadata at all: the default endpoints at the server's origin (2025-03-26 §2.3.3).

    That revision made PKCE mandatory for every client and server, so S256 is assumed.
    """
    origin = _origin(server_url)
    return AuthorizationServerMetadata(
        issuer=origin,
        authorization_endpoint=check_endpoint(origin + "/authorize", policy),
        token_endpoint=check_endpoint(origin + "/token", policy),
        registration_endpoint=check_endpoint(origin + "/register", policy),
        code_challenge_methods_supported=("S256",),
        token_endpoint_auth_methods_supported=("none", "client_secret_post",
                                               "client_secret_basic"),
        grant_types_supported=("authorization_code", "refresh_token"),
        legacy=True,
    )


# --- helpers -------------------------------------------------------------------------------


def _optional_strings(doc: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"metadata field {key} is not a list of strings")
    return tuple(value)


def _optional_endpoint(doc: Mapping[str, Any], key: str, policy: FetchPolicy) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MetadataError(f"metadata field {key} is not a string")
    return check_endpoint(value, policy)


def choose_first(servers: Sequence[str]) -> str:
    """The default when PRM lists several authorization servers: the first, as published."""
    return servers[0]
