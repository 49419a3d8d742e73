"""Steps: the authorization request and the validation of its response.

PKCE S256 only, confirmed from metadata before anything is opened (CL-22/23); ``state``;
``resource`` (CL-24/25); the issuer recorded with the verifier (CL-26); the RFC 9207 ``iss``
table with plain string comparison (CL-27/28), and nothing the server said is shown when
``iss`` does not match (CL-29); the URL itself checked before any browser sees it (CL-36).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit, urlunsplit

from bastion.client.discovery import AuthorizationServerMetadata
from bastion.client.errors import AuthorizationResponseError, MetadataError, UnsafeAuthorizationUrl
from bastion.client.registration import ClientCredentials
from bastion.net.addresses import InvalidHost, classify_host, is_localhost_name
from bastion.oauth.rfc7636 import s256_challenge

__all__ = [
    "PendingAuthorization",
    "begin_authorization",
    "check_authorization_url",
    "validate_callback",
]

# Characters a URL needs no raw form of, and that a shell or a terminal would interpret.
_UNSAFE_CHARACTERS = frozenset(" \t\r\n\"'`$()<>;|\\{}^") | {chr(c) for c in range(0x20)} | {
    "\x7f"}


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What must be remembered between opening the authorization URL and its callback."""

    issuer: str
    client_id: str
    redirect_uri: str
    resource: str
    scopes: tuple[str, ...] | None
    state: str = field(repr=False)
    code_verifier: str = field(repr=False)
    iss_required: bool = False


def check_authorization_url(url: str, *, allow_http_loopback: bool = False) -> str:
    """CL-36: https only (http only to loopback when allowed), no scheme tricks, no characters
    a shell or terminal would act on, no user information, a real host."""
    if any(ch in _UNSAFE_CHARACTERS for ch in url):
        raise UnsafeAuthorizationUrl("the authorization URL contains unsafe characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeAuthorizationUrl(f"the authorization URL scheme {scheme!r} is not allowed")
    if not parts.hostname or "@" in parts.netloc:
        raise UnsafeAuthorizationUrl("the authorization URL has no usable host")
    if scheme == "http" and not (allow_http_loopback and _is_loopback(parts.hostname)):
        raise UnsafeAuthorizationUrl("plain http is only allowed to loopback in development")
    return url


def _is_loopback(host: str) -> bool:
    try:
        classified = classify_host(host)
    except InvalidHost:
        return False
    if classified.ip is not None:
        return classified.canonical and classified.ip.is_loopback
    return classified.name is not None and is_localhost_name(classified.name)


def begin_authorization(
    metadata: AuthorizationServerMetadata,
    client: ClientCredentials,
    *,
    redirect_uri: str,
    resource: str,
    scopes: tuple[str, ...] | None,
    allow_http_loopback: bool = False,
    token: Callable[[int], str] = secrets.token_urlsafe,
) -> tuple[str, PendingAuthorization]:
    """The authorization URL to open and the record to keep for its callback."""
    if metadata.authorization_endpoint is None:
        raise MetadataError("the authorization server has no authorization_endpoint")
    if "S256" not in metadata.code_challenge_methods_supported:
        raise MetadataError(
            "the authorization server does not advertise PKCE S256 "
            "(code_challenge_methods_supported); refusing to authorize"
        )
    endpoint = check_authorization_url(metadata.authorization_endpoint,
                                       allow_http_loopback=allow_http_loopback)
    verifier = token(48)  # 64 characters of [A-Za-z0-9_-]
    pending = PendingAuthorization(
        issuer=metadata.issuer, client_id=client.client_id, redirect_uri=redirect_uri,
        resource=resource, scopes=scopes, state=token(24), code_verifier=verifier,
        iss_required=metadata.iss_parameter_supported)
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": s256_challenge(verifier),
        "code_challenge_method": "S256",
        "state": pending.state,
        "resource": resource,
    }
    if scopes:
        params["scope"] = " ".join(scopes)
    parts = urlsplit(endpoint)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, "")), pending


def validate_callback(pending: PendingAuthorization, params: Mapping[str, str]) -> str:
    """The authorization code, once the response is proven to be for this request.

    ``iss`` first (RFC 9207 §2.4, as a plain string), then ``state``; only then may an
    ``error`` from the server be reported.
    """
    iss = params.get("iss")
    if iss is None:
        if pending.iss_required:
            raise AuthorizationResponseError(
                "authorization response rejected: the authorization server advertises the iss "
                "parameter but the response has none")
    elif iss != pending.issuer:
        raise AuthorizationResponseError(
            "authorization response rejected: it did not come from the expected authorization "
            "server (iss mismatch)")
    state = params.get("state")
    if state is None or not hmac.compare_digest(state.encode(), pending.state.encode()):
        raise AuthorizationResponseError(
            "authorization response rejected: missing or wrong state")
    error = params.get("error")
    if error is not None:
        description = params.get("error_description", "")
        printable = "".join(ch for ch in description if 0x20 <= ord(ch) < 0x7F)[:200]
        shown = f"{error[:64]}: {printable}" if printable else error[:64]
        raise AuthorizationResponseError(f"authorization refused ({shown})", error=error[:64])
    code = params.get("code")
    if not code:
        raise AuthorizationResponseError("authorization response has no code")
    return code
