"""RFC 9728 OAuth 2.0 Protected Resource Metadata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["WELL_KNOWN", "metadata_document", "metadata_url", "metadata_urls_to_try"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(resource: str) -> str:
    """Path-aware well-known URL: the suffix goes between host and path (§3.1)."""
    p = urlsplit(resource)
    path = p.path.rstrip("/")
    return urlunsplit((p.scheme, p.netloc, WELL_KNOWN + path, p.query, ""))


def metadata_urls_to_try(resource: str) -> list[str]:
    """Client discovery order without a challenge: path-aware, then root (CL-03)."""
    p = urlsplit(resource)
    root = urlunsplit((p.scheme, p.netloc, WELL_KNOWN, "", ""))
    first = metadata_url(resource)
    return [first] if first == root else [first, root]


def metadata_document(
    *,
    resource: str,
    authorization_servers: Sequence[str],
    scopes_supported: Sequence[str],
    resource_name: str | None = None,
    resource_documentation: str | None = None,
) -> dict[str, Any]:
    if not authorization_servers:
        raise ValueError("MCP requires at least one authorization server (RS-02)")
    doc: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        # RS-07: offline_access is the AS's business, never advertised by the resource.
        "scopes_supported": [s for s in scopes_supported if s != "offline_access"],
        "bearer_methods_supported": ["header"],
    }
    if resource_name:
        doc["resource_name"] = resource_name
    if resource_documentation:
        doc["resource_documentation"] = resource_documentation
    return doc
