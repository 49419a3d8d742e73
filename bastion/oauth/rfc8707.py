"""RFC 8707 resource indicators and the MCP canonical server URI.

MCP (Authorization §Canonical Server URI): lowercase scheme and host, no fragment, no trailing
slash unless significant; servers accept uppercase scheme/host as equal (RS-20, CL-25).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["canonical_resource", "same_resource"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_resource(uri: str) -> str:
    """Return the canonical form of a resource URI, or raise ``ValueError``."""
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"resource must be an http(s) URI, got {uri!r}")
    if not parts.hostname:
        raise ValueError(f"resource must have a host, got {uri!r}")
    if parts.fragment:
        raise ValueError(f"resource must not have a fragment, got {uri!r}")
    if parts.username or parts.password:
        raise ValueError("resource must not carry user information")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = parts.path
    if path.endswith("/"):
        path = path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def same_resource(a: str, b: str) -> bool:
    """True when two resource URIs name the same resource once canonicalised."""
    try:
        return canonical_resource(a) == canonical_resource(b)
    except ValueError:
        return False
