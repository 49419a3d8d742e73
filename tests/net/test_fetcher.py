"""The one door out against real loopback peers (BP-09 .. BP-14)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bastion.errors import BastionError
from bastion.net import FetchError, FetchPolicy

from .conftest import FetcherFactory, ServerFactory
from .peers import (
    GuardedBackend,
    Request,
    ScriptedResolver,
    json_handler,
    redirect_handler,
    respond,
)

LOOPBACK_OK = FetchPolicy(allow_http_loopback=True)

# Hosts that must be refused before any connection, with the port of a live loopback server
# substituted in, so a wrongly allowed loopback spelling would really reach it.
BLOCKED_HOSTS = [
    "169.254.169.254",
    "0x7f000001",
    "017700000001",
    "2130706433",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "127.0.0.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[::]",
    "100.64.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "[fc00::1]",
    "[fe80::1%25eth0]",
    "0.0.0.0",
    "0",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.2.1",
    "198.18.0.1",
    "[2001:db8::1]",
    "[2002:7f00:1::1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[ff02::1]",
    "localhost",
    "LOCALHOST.",
    "api.localhost",
]
# httpx already rejects these as malformed IPv4 while parsing the URL.
UNPARSEABLE_BY_HTTPX = {"0177.0.0.1"}


@pytest.mark.parametrize("host", BLOCKED_HOSTS)
@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_bp11_blocked_address_form_is_refused_before_any_connection(
    host: str,
    scheme: str,
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    guard: GuardedBackend,
    resolver: ScriptedResolver,
) -> None:
    server = await serve(json_handler())
    fetcher = make_fetcher(FetchPolicy())
    with pytest.raises(FetchError) as caught:
        await fetcher.get(f"{scheme}://{host}:{server.port}/.well-known/x?secret=s3cr3t")
    expected = "invalid_url" if host in UNPARSEABLE_BY_HTTPX else "blocked_address"
    assert caught.value.reason == expected
    assert "s3cr3t" not in str(caught.value)
    assert guard.connects == []
    assert resolver.calls == []
    assert server.accepts == 0


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f000001", "017700000001", "127.1", "0x7f.0.0.1"]
)
async def test_bp11_decimal_ipv4_spelling_is_refused_even_with_loopback_allowed(
    host: str, serve: ServerFactory, make_fetcher: FetcherFactory, guard: GuardedBackend
) -> None:
    server = await serve(json_handler())
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(f"http://{host}:{server.port}/")
    assert caught.value.reason == "blocked_address"
    assert "non-canonical" in str(caught.value)
    assert guard.connects == []
    assert server.accepts == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:70/", "scheme"),
        ("http://example.com/", "scheme"),
        ("https://user:pw@example.com/", "invalid_url"),
        ("https://exa mple.com/", "invalid_url"),
        ("https://1.2.3.4.5/", "invalid_url"),
        ("https:///nohost", "invalid_url"),
        ("https://example.com/" + "a" * 3000, "invalid_url"),
    ],
)
async def test_bp10_bad_url_is_refused_without_io(
    url: str,
    reason: str,
    make_fetcher: FetcherFactory,
    guard: GuardedBackend,
    resolver: ScriptedResolver,
) -> None:
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(url)
    assert caught.value.reason == reason
    assert guard.connects == []
    assert resolver.calls == []


async def test_bp10_http_refused_unless_loopback_allowed(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    server = await serve(json_handler())
    with pytest.raises(FetchError) as caught:
        await make_fetcher(FetchPolicy()).get(server.url())
    assert caught.value.reason == "blocked_address"
    assert server.accepts == 0

    result = await make_fetcher(LOOPBACK_OK).get(server.url("/doc"))
    assert (result.status, result.body) == (200, b'{"ok": true}')
    assert server.requests[0].target == "/doc"
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert server.requests[0].headers["user-agent"].startswith("bastion/")


async def test_bp10_http_to_a_public_name_is_refused_even_with_loopback_allowed(
    make_fetcher: FetcherFactory, resolver: ScriptedResolver, guard: GuardedBackend
) -> None:
    resolver.answers["app.example"] = [["127.0.0.1"]]
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get("http://app.example/")
    assert caught.value.reason == "scheme"
    assert resolver.calls == []
    assert guard.connects == []


async def test_bp10_http_to_localhost_name_goes_to_loopback(
    serve: ServerFactory, make_fetcher: FetcherFactory, resolver: ScriptedResolver
) -> None:
    server = await serve(json_handler())
    resolver.answers["localhost"] = [["127.0.0.1"]]
    assert await make_fetcher(LOOPBACK_OK).get_json(server.url(host="localhost")) == {"ok": True}


async def test_bp10_localhost_name_resolving_to_a_public_address_is_refused(
    make_fetcher: FetcherFactory, resolver: ScriptedResolver, guard: GuardedBackend
) -> None:
    resolver.answers["localhost"] = [["93.184.215.14"]]
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get("http://localhost/")
    assert caught.value.reason == "blocked_address"
    assert guard.connects == []


# --- BP-13: resolve once, check, connect to what was checked --------------------------------


async def test_bp13_dns_answer_change_connects_to_checked_address(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    guard: GuardedBackend,
) -> None:
    """First answer public-looking, second 127.0.0.1: the connect goes to the first, only."""
    server = await serve(json_handler(), port=0)
    resolver.answers["rebind.example"] = [["93.184.215.14"], ["127.0.0.1"]]
    with pytest.raises(FetchError) as caught:
        await make_fetcher(FetchPolicy()).get(f"https://rebind.example:{server.port}/")
    # The guard stood in for the public host (this machine may not reach it): the attempt
    # went to the checked address and nowhere else, and the name was resolved once.
    assert caught.value.reason == "connect"
    assert resolver.calls == ["rebind.example"]
    assert guard.connects == [("93.184.215.14", server.port)]
    assert server.accepts == 0


async def test_bp13_pinned_address_is_used_with_real_peers(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    guard: GuardedBackend,
) -> None:
    """Two real servers, 127.0.0.1 and 127.0.0.2, on one port; DNS flips between them."""
    first = await serve(json_handler(b'{"server": 1}'))
    second = await serve(json_handler(b'{"server": 2}'), host="127.0.0.2", port=first.port)
    resolver.answers["localhost"] = [["127.0.0.1"], ["127.0.0.2"]]
    url = first.url(host="localhost")

    assert await make_fetcher(LOOPBACK_OK).get_json(url) == {"server": 1}
    assert (first.accepts, second.accepts) == (1, 0)
    assert resolver.calls == ["localhost"]
    assert guard.connects == [("127.0.0.1", first.port)]

    # A new connection resolves afresh and goes where *that* answer, once checked, points.
    assert await make_fetcher(LOOPBACK_OK).get_json(url) == {"server": 2}
    assert guard.connects[-1] == ("127.0.0.2", first.port)


@pytest.mark.parametrize(
    "answers",
    [
        ["93.184.215.14", "10.0.0.1"],
        ["127.0.0.1", "93.184.215.14"],
        ["2606:4700::1", "fe80::1%eth0"],
        ["::ffff:169.254.169.254"],
    ],
)
async def test_bp13_any_forbidden_dns_answer_refuses_the_name(
    answers: list[str],
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    guard: GuardedBackend,
) -> None:
    resolver.answers["mixed.example"] = [answers]
    with pytest.raises(FetchError) as caught:
        await make_fetcher(FetchPolicy()).get("https://mixed.example/")
    assert caught.value.reason == "blocked_address"
    assert guard.connects == []


async def test_bp13_unresolvable_name_is_a_dns_error(
    make_fetcher: FetcherFactory, guard: GuardedBackend
) -> None:
    with pytest.raises(FetchError) as caught:
        await make_fetcher(FetchPolicy()).get("https://nowhere.example/")
    assert caught.value.reason == "dns"
    assert "nowhere.example" in str(caught.value)
    assert guard.connects == []


async def test_bp13_system_resolver_resolves_localhost_for_real(
    serve: ServerFactory, guard: GuardedBackend
) -> None:
    from bastion.net import SafeFetcher

    server = await serve(json_handler())
    async with SafeFetcher(LOOPBACK_OK, network_backend=guard) as fetcher:
        assert await fetcher.get_json(server.url(host="localhost")) == {"ok": True}
    assert all(host in ("127.0.0.1", "::1") for host, _ in guard.connects)


# --- BP-12: redirects ------------------------------------------------------------------------


async def test_bp12_redirect_is_refused_by_default(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    server = await serve(redirect_handler("/elsewhere"))
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(server.url())
    assert caught.value.reason == "redirect"
    assert server.accepts == 1


async def test_bp12_redirect_to_private_address_is_not_followed(
    serve: ServerFactory, make_fetcher: FetcherFactory, guard: GuardedBackend
) -> None:
    server = await serve(redirect_handler("http://10.0.0.1/latest/meta-data/"))
    policy = FetchPolicy(allow_http_loopback=True, max_redirects=5)
    with pytest.raises(FetchError) as caught:
        await make_fetcher(policy).get(server.url())
    assert caught.value.reason == "blocked_address"
    assert caught.value.host == "10.0.0.1"
    assert guard.connects == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/",
        "http://2130706433/",
        "http://[::ffff:10.0.0.1]/",
        "file:///etc/passwd",
    ],
)
async def test_bp12_every_redirect_hop_is_rechecked(
    location: str, serve: ServerFactory, make_fetcher: FetcherFactory, guard: GuardedBackend
) -> None:
    server = await serve(redirect_handler(location, status=307))
    with pytest.raises(FetchError) as caught:
        await make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=3)).get(server.url())
    assert caught.value.reason in ("blocked_address", "scheme")
    assert guard.connects == [("127.0.0.1", server.port)]


async def test_bp12_redirects_followed_up_to_the_limit(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def chain(request: Request, writer: asyncio.StreamWriter) -> None:
        hops = {"/a": "/b", "/b": "/c"}
        if request.target in hops:
            await respond(writer, 302, b"", (("Location", hops[request.target]),))
        else:
            await respond(writer, 200, b'{"at": "c"}', (("Content-Type", "application/json"),))

    server = await serve(chain)
    two = make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=2))
    result = await two.get(server.url("/a"))
    assert result.url == server.url("/c")
    assert result.json_object() == {"at": "c"}

    one = make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=1))
    with pytest.raises(FetchError) as caught:
        await one.get(server.url("/a"))
    assert caught.value.reason == "redirect"


async def test_bp12_cross_origin_redirect_drops_credentials(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    target = await serve(json_handler())
    origin = await serve(redirect_handler(target.url("/doc")))
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=1))
    await fetcher.get(origin.url(), headers={"Authorization": "Bearer tok", "X-Trace": "1"})
    assert origin.requests[0].headers["authorization"] == "Bearer tok"
    assert "authorization" not in target.requests[0].headers
    assert target.requests[0].headers["x-trace"] == "1"


async def test_bp12_post_redirect_is_never_followed(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    target = await serve(json_handler())
    origin = await serve(redirect_handler(target.url("/token"), status=307))
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=5))
    with pytest.raises(FetchError) as caught:
        await fetcher.post_form(origin.url("/token"), {"code": "c0de", "client_secret": "shh"})
    assert caught.value.reason == "redirect"
    assert "c0de" not in str(caught.value) and "shh" not in str(caught.value)
    assert target.accepts == 0


async def test_bp12_httpx_client_following_redirects_rechecks_each_hop(
    serve: ServerFactory, make_fetcher: FetcherFactory, guard: GuardedBackend
) -> None:
    server = await serve(redirect_handler("http://192.168.0.1/admin"))
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, max_redirects=3))
    async with fetcher.client() as client:
        with pytest.raises(FetchError) as caught:
            await client.get(server.url(), follow_redirects=True)
    assert caught.value.reason == "blocked_address"
    assert guard.connects == [("127.0.0.1", server.port)]


# --- BP-14: size, time, content type ---------------------------------------------------------


async def test_bp14_endless_body_is_cut_at_the_size_cap(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def endless(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        while True:
            writer.write(b" " * 65536)
            await writer.drain()

    server = await serve(endless)
    fetcher = make_fetcher(
        FetchPolicy(allow_http_loopback=True, max_bytes=100_000, timeout_seconds=10)
    )
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server.url())
    assert caught.value.reason == "too_large"
    assert time.monotonic() - started < 2


async def test_bp14_declared_content_length_over_cap_is_refused_early(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def huge(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 1000000000\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    server = await serve(huge)
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, timeout_seconds=10))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server.url())
    assert caught.value.reason == "too_large"
    assert time.monotonic() - started < 1


async def test_bp14_slow_drip_body_times_out_within_the_limit(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def drip(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        for _ in range(100):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)

    server = await serve(drip)
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, timeout_seconds=1))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server.url())
    assert caught.value.reason == "timeout"
    assert 0.9 < time.monotonic() - started < 1.5


async def test_bp14_silent_server_times_out(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def silent(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await serve(silent)
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, timeout_seconds=0.5))
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server.url())
    assert caught.value.reason == "timeout"
    assert time.monotonic() - started < 1


async def test_bp14_client_body_reads_are_also_capped_and_timed(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def drip(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)

    server = await serve(drip)
    fetcher = make_fetcher(FetchPolicy(allow_http_loopback=True, timeout_seconds=0.5))
    async with fetcher.client() as client:
        with pytest.raises(FetchError) as caught:
            await client.get(server.url())
    assert caught.value.reason == "timeout"


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("Application/JSON ; charset=UTF-8", True),
        ("application/jwk-set+json", True),
        ("text/html", False),
        ("application/json-seq", False),
        ("text/plain; application/json", False),
        ("", False),
    ],
)
async def test_bp14_content_type_must_be_allowed(
    content_type: str, accepted: bool, serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    server = await serve(json_handler(content_type=content_type))
    fetcher = make_fetcher(LOOPBACK_OK)
    if accepted:
        assert await fetcher.get_json(server.url()) == {"ok": True}
    else:
        with pytest.raises(FetchError) as caught:
            await fetcher.get_json(server.url())
        assert caught.value.reason == "content_type"


async def test_bp14_compressed_body_is_refused(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def gzipped(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(
            writer,
            200,
            b"\x1f\x8b",
            (("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
        )

    server = await serve(gzipped)
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(server.url())
    assert caught.value.reason == "content_encoding"


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"[1, 2]", 200, "invalid_json"),
        (b'{"a": 1, "a": 2}', 200, "invalid_json"),
        (b'{"a": NaN}', 200, "invalid_json"),
        (b'{"a": "\xff"}', 200, "invalid_json"),
        (b"{", 200, "invalid_json"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 200, "invalid_json"),  # was a 500
        (b'{"a": "\\ud800"}', 200, "invalid_json"),
        (b'{"error": "nope"}', 404, "status"),
    ],
)
async def test_get_json_wants_a_strict_json_object_with_2xx(
    body: bytes, status: int, reason: str, serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def handler(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(writer, status, body)

    server = await serve(handler)
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get_json(server.url())
    assert caught.value.reason == reason
    assert isinstance(caught.value, BastionError)


async def test_post_form_sends_the_form_and_returns_any_status(
    serve: ServerFactory, make_fetcher: FetcherFactory
) -> None:
    async def token(request: Request, writer: asyncio.StreamWriter) -> None:
        await respond(writer, 400, b'{"error": "invalid_grant"}')

    server = await serve(token)
    result = await make_fetcher(LOOPBACK_OK).post_form(
        server.url("/token"), {"grant_type": "authorization_code", "code": "a b"}
    )
    assert result.status == 400
    assert result.json_object() == {"error": "invalid_grant"}
    request = server.requests[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.body == b"grant_type=authorization_code&code=a+b"


async def test_connection_refused_is_a_connect_error(
    make_fetcher: FetcherFactory, serve: ServerFactory
) -> None:
    server = await serve(json_handler())
    port = server.port
    await server.stop()
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(f"http://127.0.0.1:{port}/")
    assert caught.value.reason == "connect"


# --- BP-09: proxies --------------------------------------------------------------------------


async def test_bp09_environment_proxies_are_ignored(
    serve: ServerFactory, make_fetcher: FetcherFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await serve(json_handler(b'{"via": "proxy"}'))
    origin = await serve(json_handler(b'{"via": "origin"}'))
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.setenv(name, proxy.url())
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = make_fetcher(LOOPBACK_OK)
    assert await fetcher.get_json(origin.url()) == {"via": "origin"}
    async with fetcher.client() as client:
        assert (await client.get(origin.url())).json() == {"via": "origin"}
    async with httpx.AsyncClient(transport=fetcher.transport()) as own:  # trust_env left on
        assert (await own.get(origin.url())).json() == {"via": "origin"}
    assert proxy.accepts == 0


async def test_bp09_explicit_egress_proxy_is_used(
    serve: ServerFactory, make_fetcher: FetcherFactory, resolver: ScriptedResolver
) -> None:
    proxy = await serve(json_handler(b'{"via": "proxy"}'))
    resolver.answers["localhost"] = [["127.0.0.1"]]
    policy = FetchPolicy(allow_http_loopback=True, egress_proxy=proxy.url())
    assert await make_fetcher(policy).get_json("http://localhost:8123/doc") == {"via": "proxy"}
    assert proxy.requests[0].target == "http://localhost:8123/doc"


async def test_bp09_egress_proxy_still_refuses_forbidden_targets(
    serve: ServerFactory, make_fetcher: FetcherFactory, resolver: ScriptedResolver
) -> None:
    proxy = await serve(json_handler())
    resolver.answers["internal.example"] = [["10.0.0.7"]]
    fetcher = make_fetcher(FetchPolicy(egress_proxy=proxy.url()))
    for url in ("https://169.254.169.254/", "https://internal.example/"):
        with pytest.raises(FetchError) as caught:
            await fetcher.get(url)
        assert caught.value.reason == "blocked_address"
    assert proxy.accepts == 0


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        FetchPolicy(max_bytes=0)
    with pytest.raises(ValueError, match="egress_proxy"):
        FetchPolicy(egress_proxy="socks5://127.0.0.1:1080")
    with pytest.raises(TypeError):
        FetchPolicy(allowed_content_types="application/json")  # type: ignore[arg-type]
