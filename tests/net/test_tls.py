"""https through the pinned connection: TLS speaks to the name, TCP goes to the checked address."""

from __future__ import annotations

import ssl

import pytest
import trustme

from bastion.net import FetchError, FetchPolicy

from .conftest import FetcherFactory, ServerFactory
from .peers import GuardedBackend, ScriptedResolver, json_handler

LOOPBACK_OK = FetchPolicy(allow_http_loopback=True)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class SniRecorder:
    def __init__(self) -> None:
        self.names: list[str | None] = []

    def __call__(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.names.append(name)


@pytest.fixture
def sni() -> SniRecorder:
    return SniRecorder()


@pytest.fixture
def server_context(ca: trustme.CA, sni: SniRecorder) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "metadata.example").configure_cert(context)
    context.sni_callback = sni
    return context


async def test_bp13_tls_verifies_the_hostname_while_tcp_goes_to_the_pinned_ip(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    guard: GuardedBackend,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    sni: SniRecorder,
) -> None:
    server = await serve(
        json_handler(b'{"issuer": "https://metadata.example"}'), ssl_context=server_context
    )
    resolver.answers["metadata.example"] = [["127.0.0.1"], ["10.0.0.1"]]
    fetcher = make_fetcher(LOOPBACK_OK, ssl_context=client_context)
    document = await fetcher.get_json(server.url(scheme="https", host="metadata.example"))
    assert document == {"issuer": "https://metadata.example"}
    assert guard.connects == [("127.0.0.1", server.port)]
    assert sni.names == ["metadata.example"]
    assert server.requests[0].headers["host"] == f"metadata.example:{server.port}"


async def test_bp13_certificate_for_another_name_fails_even_at_the_pinned_ip(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    sni: SniRecorder,
) -> None:
    server = await serve(json_handler(), ssl_context=server_context)
    resolver.answers["other.example"] = [["127.0.0.1"]]
    fetcher = make_fetcher(LOOPBACK_OK, ssl_context=client_context)
    with pytest.raises(FetchError) as caught:
        await fetcher.get(server.url(scheme="https", host="other.example"))
    assert caught.value.reason == "tls"
    assert sni.names == ["other.example"]
    assert server.requests == []


async def test_bp13_untrusted_certificate_is_a_tls_error(
    serve: ServerFactory, make_fetcher: FetcherFactory, server_context: ssl.SSLContext
) -> None:
    server = await serve(json_handler(), ssl_context=server_context)
    with pytest.raises(FetchError) as caught:
        await make_fetcher(LOOPBACK_OK).get(server.url(scheme="https", host="127.0.0.1"))
    assert caught.value.reason == "tls"


async def test_bp10_https_to_loopback_is_refused_without_allow_http_loopback(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    guard: GuardedBackend,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    """https does not make a loopback address public: the same switch governs both schemes."""
    server = await serve(json_handler(), ssl_context=server_context)
    resolver.answers["metadata.example"] = [["127.0.0.1"]]
    fetcher = make_fetcher(FetchPolicy(), ssl_context=client_context)
    for host in ("localhost", "127.0.0.1", "metadata.example"):
        with pytest.raises(FetchError) as caught:
            await fetcher.get(server.url(scheme="https", host=host))
        assert caught.value.reason == "blocked_address"
    assert resolver.calls == ["metadata.example"]
    assert guard.connects == []
    assert server.accepts == 0


async def test_bp10_https_to_localhost_works_when_allowed(
    serve: ServerFactory,
    make_fetcher: FetcherFactory,
    resolver: ScriptedResolver,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = await serve(json_handler(), ssl_context=server_context)
    resolver.answers["localhost"] = [["127.0.0.1"]]
    fetcher = make_fetcher(LOOPBACK_OK, ssl_context=client_context)
    assert await fetcher.get_json(server.url(scheme="https", host="localhost")) == {"ok": True}
    async with fetcher.client() as client:
        response = await client.get(server.url(scheme="https", host="localhost"))
        assert response.json() == {"ok": True}
