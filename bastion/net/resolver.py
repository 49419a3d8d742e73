"""Name resolution, injectable, and the one place where answers are checked.

The fetcher resolves a name exactly once per connection and connects to an address it has just
checked; it never hands the name to a second resolver (that gap is DNS rebinding).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from ipaddress import ip_address
from typing import Protocol

from bastion.net.addresses import (
    InvalidHost,
    IPAddress,
    classify_host,
    forbidden_reason,
    is_localhost_name,
)
from bastion.net.policy import FetchError

__all__ = ["Resolver", "resolve_checked", "system_resolver"]


class Resolver(Protocol):
    """``await resolver(name, port)`` returns the addresses (as text) the name points to."""

    async def __call__(self, host: str, port: int) -> Sequence[str]: ...


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The operating system's resolver, via the running loop's ``getaddrinfo``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def resolve_checked(
    host: str, port: int, resolver: Resolver, *, allow_loopback: bool
) -> list[IPAddress]:
    """The addresses ``host`` may be reached at; every one of them passed the address check.

    If any answer is forbidden the whole name is refused: an attacker who controls a zone can
    mix a public and a private answer and let the connection order pick.
    """
    try:
        classified = classify_host(host)
    except InvalidHost as exc:
        raise FetchError("invalid_url", host, str(exc)) from None
    if classified.ip is not None:
        if not classified.canonical:
            raise FetchError("blocked_address", host, "non-canonical IPv4 spelling")
        why = forbidden_reason(classified.ip, allow_loopback=allow_loopback)
        if why is not None:
            raise FetchError("blocked_address", host, f"{classified.ip} is a {why} address")
        return [classified.ip]
    name = classified.name
    assert name is not None
    try:
        answers = await resolver(name, port)
    except FetchError:
        raise
    except (OSError, UnicodeError) as exc:
        raise FetchError("dns", host, f"name does not resolve: {exc}") from None
    if not answers:
        raise FetchError("dns", host, "name resolves to no address")
    checked: list[IPAddress] = []
    for answer in answers:
        try:
            ip = ip_address(answer.partition("%")[0])
        except ValueError:
            raise FetchError("dns", host, f"resolver returned a non-address {answer!r}") from None
        why = forbidden_reason(ip, allow_loopback=allow_loopback)
        if why is None and is_localhost_name(name) and forbidden_reason(ip) is None:
            raise FetchError("blocked_address", host, f"localhost name resolves to public {ip}")
        if why is not None:
            raise FetchError("blocked_address", host, f"resolves to {ip}, a {why} address")
        if ip not in checked:
            checked.append(ip)
    return checked
