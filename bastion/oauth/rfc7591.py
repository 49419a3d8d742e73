"""RFC 7591 dynamic client registration: validating client metadata, and the redirect-URI
policy shared with CIMD (AS-19, AS-25).

Deprecated by MCP 2026-07-28 in favour of CIMD; kept for older peers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from bastion.errors import OAuthError
from bastion.oauth.scopes import parse_scopes

__all__ = [
    "SELF_REGISTERED_M2M",
    "ClientMetadata",
    "InvalidClientMetadata",
    "InvalidRedirectUri",
    "check_metadata_uri",
    "check_redirect_uri",
    "check_text",
    "is_loopback_host",
    "parse_client_metadata",
]

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
# No client_credentials: a token without a user must be one an operator chose to allow.
GRANT_TYPES = ("authorization_code", "refresh_token")
SELF_REGISTERED_M2M = (
    "client_credentials is not available to a self-registered client: a machine-to-machine "
    "client is created by the operator ([[authorization_server.clients]] or "
    "`bastion clients add`)"
)
MAX_REDIRECT_URIS = 16
MAX_URI_LENGTH = 2048
MAX_NAME_LENGTH = 200
_FORBIDDEN_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "blob", "about"})
# C0 controls, DEL and C1 controls, and the bidirectional-text controls that make a name or a
# host read as something else on the consent page. None belongs in client metadata.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class InvalidRedirectUri(OAuthError):
    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    error = "invalid_client_metadata"


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_text(name: str, value: str) -> None:
    """Raise ``InvalidClientMetadata`` if ``value`` holds a control character (C0, DEL, C1)
    or a bidirectional-text control."""
    if _CONTROL.search(value):
        raise InvalidClientMetadata(f"{name} must not contain control characters")


def _split(uri: str, error: type[OAuthError]) -> SplitResult:
    """``urlsplit`` that refuses what it would quietly drop or misread: control characters
    and spaces (it deletes tabs and newlines), bad IPv6 literals, bad ports."""
    if _CONTROL.search(uri) or any(c.isspace() for c in uri):
        raise error("a URI must not contain control characters or spaces")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise error(f"URI {uri!r} cannot be parsed: {exc}") from None
    return parts


def check_redirect_uri(
    uri: str, *, application_type: str | None, allow_custom_schemes: bool
) -> None:
    """Raise ``InvalidRedirectUri`` unless ``uri`` is acceptable for this kind of client.

    https anywhere; http only on a loopback host; custom (private-use) schemes only when the
    policy allows them, and only for native clients; never javascript:, data: and the like; no
    fragment (RFC 6749 §3.1.2). ``web`` clients may not use loopback (OIDC Registration §2).
    No control characters or spaces anywhere.
    """
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH:
        raise InvalidRedirectUri("a redirect URI must be a non-empty string")
    parts = _split(uri, InvalidRedirectUri)
    scheme = parts.scheme.lower()
    if not scheme:
        raise InvalidRedirectUri(f"redirect URI {uri!r} is not absolute")
    if parts.fragment or "#" in uri:
        raise InvalidRedirectUri("a redirect URI must not contain a fragment")
    if scheme in _FORBIDDEN_SCHEMES:
        raise InvalidRedirectUri(f"the {scheme}: scheme is never allowed for a redirect URI")
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidRedirectUri(f"redirect URI {uri!r} has no host")
        if parts.username or parts.password:
            raise InvalidRedirectUri("a redirect URI must not carry user information")
        loopback = is_loopback_host(parts.hostname)
        if scheme == "http" and not loopback:
            raise InvalidRedirectUri("an http redirect URI must use a loopback host")
        if application_type == "web" and loopback:
            raise InvalidRedirectUri("a web client may not use a loopback redirect URI")
        return
    if not allow_custom_schemes:
        raise InvalidRedirectUri(f"the custom scheme {scheme}: is not allowed by this server")
    if application_type == "web":
        raise InvalidRedirectUri("a web client may not use a custom-scheme redirect URI")
    if "." not in scheme:
        # RFC 8252 §7.1: private-use schemes are reverse domain names.
        raise InvalidRedirectUri("a custom scheme must be a reverse domain name (com.example.app)")


def check_metadata_uri(name: str, uri: str, *, allow_http_loopback: bool = False) -> None:
    """A URI the client describes itself with (``client_uri``): https with a host, or http on
    a loopback host when ``allow_http_loopback``; never javascript:, data: and the like.
    Raises ``InvalidClientMetadata``."""
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidClientMetadata(f"{name} is longer than {MAX_URI_LENGTH} characters")
    parts = _split(uri, InvalidClientMetadata)
    scheme = parts.scheme.lower()
    loopback_http = scheme == "http" and allow_http_loopback and is_loopback_host(parts.hostname)
    if scheme != "https" and not loopback_http:
        raise InvalidClientMetadata(f"{name} must be an https URL")
    if not parts.hostname:
        raise InvalidClientMetadata(f"{name} has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidClientMetadata(f"{name} must not carry user information")


@dataclass(frozen=True, slots=True)
class ClientMetadata:
    redirect_uris: tuple[str, ...]
    client_name: str | None
    client_uri: str | None
    token_endpoint_auth_method: str
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scope: str | None
    application_type: str


def _str_list(body: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadata(f"{name} must be a list of strings")
    return tuple(value)


def _opt_str(body: Mapping[str, Any], name: str, limit: int = MAX_URI_LENGTH) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidClientMetadata(f"{name} must be a string of at most {limit} characters")
    return value


def _infer_application_type(uris: tuple[str, ...]) -> str:
    """Older clients send no application_type: native when any URI is loopback or custom."""
    for uri in uris:
        p = urlsplit(uri)
        if p.scheme.lower() not in ("http", "https") or is_loopback_host(p.hostname):
            return "native"
    return "web"


def parse_client_metadata(
    body: Mapping[str, Any], *, allow_custom_schemes: bool, allow_http_loopback: bool = False
) -> ClientMetadata:
    """Validate a registration request (RFC 7591 §2, §3.2.2 error codes). Every string kept
    is checked: no control characters, URIs of the schemes they may have, scope syntax."""
    uris = _str_list(body, "redirect_uris") or ()
    if not uris:
        raise InvalidRedirectUri("redirect_uris is required")
    if len(uris) > MAX_REDIRECT_URIS:
        raise InvalidRedirectUri(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    app_type = body.get("application_type")
    if app_type is None:
        app_type = _infer_application_type(uris)
    if app_type not in ("web", "native"):
        raise InvalidClientMetadata("application_type must be web or native")
    for uri in uris:
        check_redirect_uri(
            uri, application_type=app_type, allow_custom_schemes=allow_custom_schemes
        )
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise InvalidClientMetadata(
            f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}"
        )
    grants = _str_list(body, "grant_types") or ("authorization_code",)
    if "client_credentials" in grants:
        raise InvalidClientMetadata(SELF_REGISTERED_M2M)
    bad = [g for g in grants if g not in GRANT_TYPES]
    if bad:
        raise InvalidClientMetadata(f"unsupported grant_types: {', '.join(bad)}")
    responses = _str_list(body, "response_types") or ("code",)
    if any(r != "code" for r in responses):
        raise InvalidClientMetadata("response_types must be [\"code\"]")
    scope = _opt_str(body, "scope", 2048)
    try:
        parse_scopes(scope)
    except ValueError as exc:
        raise InvalidClientMetadata(f"scope: {exc}") from None
    name = _opt_str(body, "client_name", MAX_NAME_LENGTH)
    if name is not None:
        check_text("client_name", name)
    client_uri = _opt_str(body, "client_uri")
    if client_uri is not None:
        check_metadata_uri("client_uri", client_uri, allow_http_loopback=allow_http_loopback)
    return ClientMetadata(
        redirect_uris=uris,
        client_name=name,
        client_uri=client_uri,
        token_endpoint_auth_method=method,
        grant_types=grants,
        response_types=responses,
        scope=scope,
        application_type=app_type,
    )
