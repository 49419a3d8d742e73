"""Which hosts and addresses the one door out may reach. Pure: no I/O, no DNS.

Two questions are answered here, both before any packet leaves:

* ``classify_host``: is this URL host an IP address in *any* spelling a resolver would accept
  (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``, ``[::ffff:127.0.0.1]``,
  ``[fe80::1%eth0]``, full-width digits...) or a DNS name? A host that looks numeric but is not
  a valid address is refused rather than handed to DNS, because resolvers disagree about such
  strings and the disagreement is exactly what SSRF payloads exploit.
* ``forbidden_reason``: may we connect to this address? Deny-listed ranges are written out as data
  (the IANA special-purpose registries) instead of relying only on ``ipaddress.is_global``, whose
  answer has changed between Python releases; ``is_global`` is kept as a final backstop.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

__all__ = [
    "BLOCKED_IPV4",
    "BLOCKED_IPV6",
    "ClassifiedHost",
    "IPAddress",
    "InvalidHost",
    "classify_host",
    "forbidden_reason",
    "is_forbidden_address",
    "is_localhost_name",
    "parse_ipv4_spelling",
]

IPAddress = IPv4Address | IPv6Address


class InvalidHost(ValueError):
    """A URL host that is neither a well-formed DNS name nor an IP address."""


@dataclass(frozen=True, slots=True)
class ClassifiedHost:
    """A URL host, classified without DNS.

    Exactly one of ``ip`` and ``name`` is set. ``canonical`` is false for IPv4 addresses written
    in anything but dotted-quad decimal (``127.1``, ``0x7f000001``...): legitimate metadata URLs
    never use those spellings, so the fetcher refuses them outright.
    """

    ip: IPAddress | None = None
    name: str | None = None
    canonical: bool = True


# --- Deny lists (IANA IPv4/IPv6 Special-Purpose Address Registries, RFC 6890 and later) ------

BLOCKED_IPV4: Final[tuple[tuple[IPv4Network, str], ...]] = tuple(
    (IPv4Network(net), label)
    for net, label in (
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    )
)

BLOCKED_IPV6: Final[tuple[tuple[IPv6Network, str], ...]] = tuple(
    (IPv6Network(net), label)
    for net, label in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/32", "Teredo tunnel"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")
_NAT64_WELL_KNOWN: Final = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR: Final = IPv6Network("2002::/16")


def forbidden_reason(ip: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why ``ip`` must not be contacted, or None when it may be.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by the IPv4
    address they lead to. Only a mapped address reaches the same host, so only there does
    ``allow_loopback`` carry over; a NAT64 or 6to4 wrapper around 127.0.0.1 is never acceptable.
    """
    if isinstance(ip, IPv6Address):
        ip = IPv6Address(int(ip))  # drop any zone id: it does not change what is reached
        if ip.ipv4_mapped is not None:
            return _wrapped(
                "IPv4-mapped", forbidden_reason(ip.ipv4_mapped, allow_loopback=allow_loopback)
            )
        if ip in _NAT64_WELL_KNOWN:
            embedded = IPv4Address(int(ip) & 0xFFFFFFFF)
            return _wrapped("NAT64", forbidden_reason(embedded))
        if ip in _SIX_TO_FOUR:
            assert ip.sixtofour is not None
            return _wrapped("6to4", forbidden_reason(ip.sixtofour))
    if allow_loopback and ip.is_loopback:
        return None
    table: tuple[tuple[IPv4Network | IPv6Network, str], ...] = (
        BLOCKED_IPV4 if isinstance(ip, IPv4Address) else BLOCKED_IPV6
    )
    for network, label in table:
        if ip in network:
            return label
    if isinstance(ip, IPv6Address) and ip not in _GLOBAL_UNICAST:
        return "outside IPv6 global unicast"
    if not ip.is_global:
        return "not globally routable"
    return None


def is_forbidden_address(ip: IPAddress, allow_loopback: bool = False) -> bool:
    """True when the fetcher must not connect to ``ip``."""
    return forbidden_reason(ip, allow_loopback=allow_loopback) is not None


def _wrapped(kind: str, inner: str | None) -> str | None:
    return None if inner is None else f"{kind} form of a {inner} address"


# --- Host spellings --------------------------------------------------------------------------

_DECIMAL: Final = re.compile(r"[1-9][0-9]*|0")
_OCTAL: Final = re.compile(r"0[0-7]+")
_HEX: Final = re.compile(r"0[xX][0-9a-fA-F]*")
_NUMERIC_LOOKING: Final = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_LABEL: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_IDEOGRAPHIC_DOTS: Final = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def parse_ipv4_spelling(text: str) -> tuple[IPv4Address, bool] | None:
    """Parse ``text`` the way ``inet_aton`` (and the WHATWG URL parser) read IPv4 hosts.

    Returns ``(address, canonical)``, or None when ``text`` is not an IPv4 spelling at all.
    One to four dot-separated parts, each decimal, octal (leading ``0``) or hex (``0x``); the
    last part fills the remaining bytes. A single trailing dot is tolerated, as resolvers do.
    """
    body = text[:-1] if text.endswith(".") else text
    parts = body.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if _DECIMAL.fullmatch(part):
            values.append(int(part, 10))
        elif _OCTAL.fullmatch(part):
            values.append(int(part, 8))
        elif _HEX.fullmatch(part):
            values.append(int(part[2:] or "0", 16))
        else:
            return None
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for index, value in enumerate(head):
        number |= value << (8 * (3 - index))
    canonical = body == text and len(parts) == 4 and all(_DECIMAL.fullmatch(p) for p in parts)
    return IPv4Address(number), canonical


def classify_host(host: str) -> ClassifiedHost:
    """Classify a URL host (as found in the URL, brackets and ``%25`` zone escapes allowed).

    Raises ``InvalidHost`` for anything that is neither an IP address nor a plausible DNS name,
    including numeric-looking hosts that are not valid addresses (``1.2.3.4.5``, ``08``).
    """
    text = unicodedata.normalize("NFKC", host).translate(_IDEOGRAPHIC_DOTS).lower()
    if not text:
        raise InvalidHost("empty host")
    if text.startswith("[") != text.endswith("]"):
        raise InvalidHost(f"unbalanced brackets in host {host!r}")
    if ":" in text or text.startswith("["):
        return ClassifiedHost(ip=_parse_ipv6(text.removeprefix("[").removesuffix("]"), host))
    ipv4 = parse_ipv4_spelling(text)
    if ipv4 is not None:
        return ClassifiedHost(ip=ipv4[0], canonical=ipv4[1])
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if _NUMERIC_LOOKING.fullmatch(labels[-1]):
        raise InvalidHost(f"host {host!r} looks numeric but is not a valid IPv4 address")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise InvalidHost(f"host {host!r} is not a valid DNS name")
    return ClassifiedHost(name=name)


def _parse_ipv6(text: str, original: str) -> IPv6Address:
    """The zone id (``%eth0``, ``%25eth0``) is dropped: it picks an interface, not a host."""
    address, _, _zone = text.partition("%")
    try:
        return IPv6Address(address)
    except ValueError:
        raise InvalidHost(f"host {original!r} is not a valid IPv6 address") from None


def is_localhost_name(name: str) -> bool:
    """``localhost`` and ``*.localhost`` are loopback by definition (RFC 6761 §6.3)."""
    return name == "localhost" or name.endswith(".localhost")
