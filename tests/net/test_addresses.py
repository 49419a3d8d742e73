"""The pure address rules: every spelling of a host, every special-purpose range (BP-11)."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.net.addresses import (
    InvalidHost,
    classify_host,
    forbidden_reason,
    is_forbidden_address,
    parse_ipv4_spelling,
)

FORBIDDEN = [
    ("0.0.0.0", "unspecified"),
    ("10.1.2.3", "private"),
    ("100.64.0.1", "CGNAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.0.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:169.254.169.254", "IPv4-mapped"),
    ("::ffff:10.0.0.1", "IPv4-mapped"),
    ("::127.0.0.1", "outside IPv6 global unicast"),  # deprecated IPv4-compatible
    ("64:ff9b::7f00:1", "NAT64"),
    ("64:ff9b::a9fe:a9fe", "NAT64"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("100::1", "discard"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:db8::1", "documentation"),
    ("2002:7f00:1::1", "6to4"),
    ("2002:a9fe:a9fe::1", "6to4"),
    ("3fff::1", "documentation"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
]

ALLOWED = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:82a::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "label"), FORBIDDEN)
def test_bp11_special_purpose_address_is_forbidden(address: str, label: str) -> None:
    reason = forbidden_reason(ip_address(address))
    assert reason is not None
    assert label in reason
    assert is_forbidden_address(ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_bp11_public_address_is_allowed(address: str) -> None:
    assert forbidden_reason(ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_bp10_loopback_allowed_only_when_asked(address: str) -> None:
    assert is_forbidden_address(ip_address(address))
    assert not is_forbidden_address(ip_address(address), allow_loopback=True)


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:7f00:1::1", "10.0.0.1", "fe80::1"])
def test_bp11_allowing_loopback_does_not_open_other_ranges(address: str) -> None:
    assert is_forbidden_address(ip_address(address), allow_loopback=True)


SPELLINGS = [
    ("127.0.0.1", "127.0.0.1", True),
    ("2130706433", "127.0.0.1", False),
    ("0x7f000001", "127.0.0.1", False),
    ("0X7F000001", "127.0.0.1", False),
    ("017700000001", "127.0.0.1", False),
    ("0177.0.0.1", "127.0.0.1", False),
    ("0x7f.0.0.1", "127.0.0.1", False),
    ("0x7f.1", "127.0.0.1", False),
    ("127.1", "127.0.0.1", False),
    ("127.0.1", "127.0.0.1", False),
    ("127.0.0.1.", "127.0.0.1", False),
    ("0", "0.0.0.0", False),
    ("0x", "0.0.0.0", False),
    ("0xa9fea9fe", "169.254.169.254", False),
    ("2852039166", "169.254.169.254", False),
    ("169.254.43518", "169.254.169.254", False),
    ("\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11", "127.0.0.1", True),  # full width
    ("127\u30020\u30020\u30021", "127.0.0.1", True),  # ideographic full stops
    ("[::1]", "::1", True),
    ("::1", "::1", True),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1", True),
    ("[::FFFF:7F00:1]", "::ffff:7f00:1", True),
    ("[fe80::1%eth0]", "fe80::1", True),
    ("[fe80::1%25eth0]", "fe80::1", True),
]


@pytest.mark.parametrize(("host", "address", "canonical"), SPELLINGS)
def test_bp11_ip_spellings_are_recognised_without_dns(
    host: str, address: str, canonical: bool
) -> None:
    classified = classify_host(host)
    assert classified.ip == ip_address(address)
    assert classified.name is None
    assert classified.canonical is canonical


@pytest.mark.parametrize(
    "host",
    [
        "1.2.3.4.5",
        "08",
        "0999",
        "1.2.3.256",
        "4294967296",
        "0x100000000",
        "a..b",
        "exa mple.com",
        "[::1",
        "[not-ipv6]",
        "1::2::3",
        "",
        "-a.com",
        "a_b.c$",
    ],
)
def test_bp11_malformed_or_numeric_looking_hosts_are_invalid(host: str) -> None:
    with pytest.raises(InvalidHost):
        classify_host(host)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("1.2.3.example", "1.2.3.example"),
        ("0x7f.example", "0x7f.example"),
        ("1.0xg", "1.0xg"),
        ("localhost", "localhost"),
    ],
)
def test_dns_names_are_classified_as_names(host: str, name: str) -> None:
    assert classify_host(host).name == name
    assert classify_host(host).ip is None


@given(st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=24))
def test_bp11_every_string_inet_aton_accepts_is_parsed_to_the_same_address(text: str) -> None:
    try:
        expected = IPv4Address(socket.inet_aton(text))
    except OSError:
        return
    parsed = parse_ipv4_spelling(text)
    assert parsed is not None
    assert parsed[0] == expected
    assert classify_host(text).ip == expected


@given(st.text(alphabet="0123456789abcdefxX.-", min_size=1, max_size=24))
def test_bp11_a_host_is_an_address_a_name_or_invalid_never_a_numeric_name(text: str) -> None:
    try:
        classified = classify_host(text)
    except InvalidHost:
        return
    if classified.name is not None:
        last = classified.name.split(".")[-1]
        assert not last.isdigit()
        assert not (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:]))


def _spellings(number: int) -> list[str]:
    octets = number.to_bytes(4, "big")
    return [
        str(number),
        hex(number),
        "0" + oct(number)[2:],
        ".".join(hex(o) for o in octets),
        ".".join("0" + oct(o)[2:] for o in octets),
        f"{octets[0]}.{int.from_bytes(octets[1:], 'big')}",
        f"{octets[0]}.{octets[1]}.{int.from_bytes(octets[2:], 'big')}",
        f"{IPv4Address(number)}.",
        f"[::ffff:{IPv4Address(number)}]",
    ]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_bp11_every_spelling_of_an_address_gets_the_same_verdict(number: int) -> None:
    address = IPv4Address(number)
    verdict = is_forbidden_address(address)
    for spelling in _spellings(number):
        ip = classify_host(spelling).ip
        assert ip is not None
        embedded = ip.ipv4_mapped if isinstance(ip, IPv6Address) else ip
        assert embedded == address, spelling
        assert is_forbidden_address(ip) == verdict, spelling
