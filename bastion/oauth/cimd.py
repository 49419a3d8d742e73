"""Client ID Metadata Documents (SEP-991; MCP 2025-11-25 and 2026-07-28 §Client Registration).

Pure rules: is a ``client_id`` a CIMD URL, is a fetched document acceptable, how long may it be
cached. The fetch itself goes through the SSRF-safe fetcher (invariant 5), in ``bastion.server``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from bastion import jsonlimits
from bastion.errors import InvalidClient, OAuthError
from bastion.oauth.rfc7591 import (
    SELF_REGISTERED_M2M,
    InvalidClientMetadata,
    check_metadata_uri,
    check_redirect_uri,
    check_text,
)
from bastion.oauth.scopes import parse_scopes

__all__ = [
    "MAX_CACHE_SECONDS",
    "MAX_DOCUMENT_BYTES",
    "cache_lifetime",
    "host_allowed",
    "is_cimd_client_id",
    "parse_document",
]

MAX_DOCUMENT_BYTES = 5 * 1024  # SEP-991 suggests 5 KB
MAX_CACHE_SECONDS = 24 * 3600
DEFAULT_CACHE_SECONDS = 300


def is_cimd_client_id(client_id: str, *, allow_http_loopback: bool = False) -> bool:
    """An https URL with a path, no fragment, no user information, no dot segments."""
    try:
        parts = urlsplit(client_id)
    except ValueError:
        return False
    scheme_ok = parts.scheme == "https" or (
        allow_http_loopback and parts.scheme == "http"
        and parts.hostname in ("localhost", "127.0.0.1", "::1")
    )
    if not scheme_ok or not parts.hostname or parts.fragment or "@" in parts.netloc:
        return False
    segments = parts.path.split("/")
    return parts.path not in ("", "/") and "." not in segments and ".." not in segments


def host_allowed(client_id: str, *, allowed: Sequence[str], denied: Sequence[str]) -> bool:
    """Domain trust policy (AS-14): a host or a parent domain listed; deny wins."""
    host = (urlsplit(client_id).hostname or "").lower()

    def listed(patterns: Sequence[str]) -> bool:
        lowered = [p.lower().lstrip(".") for p in patterns]
        return any(host == p or host.endswith("." + p) for p in lowered)

    if listed(denied):
        return False
    return not allowed or listed(allowed)


def parse_document(
    client_id: str, body: bytes, *, allow_custom_schemes: bool = False,
    allow_http_loopback: bool = False,
) -> dict[str, Any]:
    """The document at ``client_id``, checked (AS-08, AS-09, AS-19); ``InvalidClient`` if not.

    Parsed with a nesting limit; every string Bastion keeps from it (name, URIs, scope) is
    checked as a registration's would be."""
    if len(body) > MAX_DOCUMENT_BYTES:
        raise InvalidClient("the client metadata document is too large")
    try:
        doc = jsonlimits.loads(body)
    except jsonlimits.InvalidJson as exc:
        raise InvalidClient(f"the client metadata document is not acceptable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidClient("the client metadata document is not a JSON object")
    if doc.get("client_id") != client_id:
        raise InvalidClient("the client metadata document's client_id differs from its URL")
    name = doc.get("client_name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidClient("the client metadata document has no client_name")
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise InvalidClient("the client metadata document has no redirect_uris")
    method = doc.get("token_endpoint_auth_method", "none")
    if method != "none":
        # A shared secret cannot be put in a public document; private_key_jwt is not done yet.
        raise InvalidClient("only token_endpoint_auth_method none is supported for CIMD")
    client_uri = doc.get("client_uri")
    scope = doc.get("scope")
    try:
        check_text("client_name", name)
        for uri in uris:
            check_redirect_uri(
                uri, application_type=None, allow_custom_schemes=allow_custom_schemes
            )
        if client_uri is not None:
            if not isinstance(client_uri, str):
                raise InvalidClientMetadata("client_uri must be a string")
            check_metadata_uri("client_uri", client_uri, allow_http_loopback=allow_http_loopback)
        if scope is not None:
            if not isinstance(scope, str):
                raise InvalidClientMetadata("scope must be a string")
            try:
                parse_scopes(scope)
            except ValueError as exc:
                raise InvalidClientMetadata(f"scope: {exc}") from None
    except OAuthError as exc:
        raise InvalidClient(f"the client metadata document: {exc.description}") from exc
    grants = doc.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise InvalidClient("grant_types must be a list of strings")
    if "client_credentials" in grants:
        raise InvalidClient(f"the client metadata document: {SELF_REGISTERED_M2M}")
    return doc


_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.I)


def cache_lifetime(headers: Mapping[str, str]) -> int:
    """Seconds the document may be cached: ``Cache-Control`` max-age, capped at 24 h (AS-11).

    ``no-store``/``no-cache`` mean 0; no header means a short default.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    cc = lowered.get("cache-control", "")
    tokens = {t.strip().lower().split("=")[0] for t in cc.split(",")}
    if "no-store" in tokens or "no-cache" in tokens:
        return 0
    ages = [int(m.group(2)) for m in _MAX_AGE.finditer(cc)]
    if ages:
        return max(0, min(min(ages), MAX_CACHE_SECONDS))
    return DEFAULT_CACHE_SECONDS
