"""The rules of the one door out, as data, and the URL check that applies them before any I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import httpx

from bastion import __version__
from bastion.errors import BastionError
from bastion.net.addresses import (
    InvalidHost,
    classify_host,
    forbidden_reason,
    is_localhost_name,
)

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_URL_LENGTH",
    "DEFAULT_TIMEOUT_SECONDS",
    "FetchError",
    "FetchPolicy",
    "FetchReason",
    "check_url",
    "parse_url",
]

DEFAULT_MAX_BYTES: Final = 256 * 1024
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
DEFAULT_MAX_URL_LENGTH: Final = 2048
DEFAULT_CONTENT_TYPES: Final = ("application/json", "application/jwk-set+json")

FetchReason = Literal[
    "invalid_url",  # unparseable, too long, userinfo, malformed host
    "scheme",  # not https (or http to loopback when allowed)
    "blocked_address",  # the host is, or resolves to, an address we never contact
    "dns",  # the name did not resolve
    "connect",  # TCP connect failed
    "tls",  # TLS handshake or certificate verification failed
    "protocol",  # the peer broke HTTP
    "redirect",  # a redirect was refused or there were too many
    "timeout",  # the total time limit ran out
    "too_large",  # the body exceeded the size cap
    "content_type",  # the media type is not allowed
    "content_encoding",  # a compressed body we did not ask for
    "status",  # a non-2xx status where a document was expected
    "invalid_json",  # not a strict JSON object
]


class FetchError(BastionError):
    """A fetch refused or failed. ``reason`` is machine-readable; the message names only the host.

    Paths and queries are never shown: they may carry codes, tokens or client secrets.
    """

    def __init__(self, reason: FetchReason, host: str, detail: str) -> None:
        self.reason: FetchReason = reason
        self.host = host[:255]
        self.detail = detail
        super().__init__(f"fetch from {self.host!r} failed ({reason}): {detail}")


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """What one fetcher may do. The defaults are the secure ones.

    ``allow_http_loopback`` permits loopback destinations (127.0.0.0/8, ::1, ``localhost``) and
    plain http to them, for development and tests. It is the only switch for loopback: https to a
    loopback address is still a loopback connection, so without it loopback is refused like any
    other private address whatever the scheme.

    ``egress_proxy`` sends every request through that http(s) proxy. Proxy variables from the
    environment are never used. The proxy resolves names itself, so with a proxy the address
    check is done on our own resolution and the proxy is trusted to enforce egress from there.
    """

    allow_http_loopback: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_redirects: int = 0
    allowed_content_types: tuple[str, ...] = DEFAULT_CONTENT_TYPES
    max_url_length: int = DEFAULT_MAX_URL_LENGTH
    egress_proxy: str | None = None
    user_agent: str = f"bastion/{__version__}"

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.timeout_seconds <= 0 or self.max_url_length <= 0:
            raise ValueError("max_bytes, timeout_seconds and max_url_length must be positive")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")
        if self.egress_proxy is not None and not self.egress_proxy.startswith(
            ("http://", "https://")
        ):
            raise ValueError("egress_proxy must be an http:// or https:// proxy URL")
        if isinstance(self.allowed_content_types, str):
            raise TypeError("allowed_content_types must be a tuple of media types, not a str")


def parse_url(url: str | httpx.URL, policy: FetchPolicy) -> httpx.URL:
    """Parse and check ``url``; see ``check_url``."""
    text = str(url)
    if len(text) > policy.max_url_length:
        raise FetchError(
            "invalid_url", _host_hint(text), f"URL longer than {policy.max_url_length}"
        )
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise FetchError("invalid_url", _host_hint(text), f"unparseable URL: {exc}") from None
    check_url(parsed, policy)
    return parsed


def check_url(url: httpx.URL, policy: FetchPolicy) -> None:
    """Refuse, without any I/O, what the URL alone shows to be out of bounds.

    IP literals in any spelling are judged here, before DNS; names are judged again by the
    connecting backend on the addresses they resolve to.
    """
    host = url.host or "?"
    if len(str(url)) > policy.max_url_length:
        raise FetchError("invalid_url", host, f"URL longer than {policy.max_url_length}")
    if url.scheme not in ("https", "http"):
        raise FetchError("scheme", host, f"scheme {url.scheme!r} is not allowed, only https")
    if url.userinfo:
        raise FetchError("invalid_url", host, "credentials in the URL are not allowed")
    if not url.raw_host:
        raise FetchError("invalid_url", host, "URL has no host")
    try:
        classified = classify_host(url.raw_host.decode("ascii"))
    except (InvalidHost, UnicodeDecodeError) as exc:
        raise FetchError("invalid_url", host, str(exc)) from None
    loopback = policy.allow_http_loopback
    if classified.ip is not None:
        if not classified.canonical:
            raise FetchError(
                "blocked_address", host, f"non-canonical spelling of IPv4 address {classified.ip}"
            )
        why = forbidden_reason(classified.ip, allow_loopback=loopback)
        if why is not None:
            raise FetchError("blocked_address", host, f"{classified.ip} is a {why} address")
        # It passed with loopback allowed; refused without, it can only be a loopback address.
        is_loopback = forbidden_reason(classified.ip) is not None
    else:
        assert classified.name is not None
        is_loopback = is_localhost_name(classified.name)
        if is_loopback and not loopback:
            raise FetchError("blocked_address", host, "localhost is a loopback name")
    if url.scheme == "http" and not (loopback and is_loopback):
        raise FetchError(
            "scheme",
            host,
            "plain http is only allowed to loopback, and only when allow_http_loopback is set",
        )


def _host_hint(text: str) -> str:
    """A best-effort host for errors about URLs too broken to parse."""
    rest = text.partition("://")[2] or text
    return rest.split("/", 1)[0].rpartition("@")[2][:255] or "?"
