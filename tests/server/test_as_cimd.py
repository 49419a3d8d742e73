"""Client ID Metadata Documents (AS-06..AS-14), with a stand-in for the SSRF-safe fetcher."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import InvalidClient
from bastion.oauth import cimd
from tests.server.conftest import Harness, make_harness

CID = "https://app.example/oauth/client.json"
CB = "http://127.0.0.1:3000/callback"


def doc(**overrides: Any) -> bytes:
    d: dict[str, Any] = {"client_id": CID, "client_name": "Example MCP Client",
                         "redirect_uris": [CB, "http://localhost:3000/callback"],
                         "grant_types": ["authorization_code", "refresh_token"],
                         "token_endpoint_auth_method": "none"}
    d.update(overrides)
    return json.dumps({k: v for k, v in d.items() if v is not None}).encode()


def serve(h: Harness, body: bytes, headers: dict[str, str] | None = None,
          status: int = 200) -> None:
    h.fetcher.documents[CID] = (status, headers or {"Cache-Control": "max-age=600"}, body)


async def _authorize(h: Harness, **overrides: str | None) -> Any:
    merged: dict[str, str | None] = {"client_id": CID, "redirect_uri": CB, **overrides}
    params, _ = h.authorize_params(**merged)
    return await h.http.get("/authorize", params=params)


async def test_as07_cimd_client_full_flow(h: Harness) -> None:
    serve(h, doc())
    code, verifier, _ = await h.get_code(client_id=CID, redirect_uri=CB)
    r = await h.exchange(code, verifier, client_id=CID, redirect_uri=CB)
    assert r.status_code == 200, r.text
    assert "refresh_token" in r.json()
    assert h.fetcher.calls[0] == CID


async def test_as08_client_id_mismatch_is_invalid_client(h: Harness) -> None:
    serve(h, doc(client_id="https://other.example/client.json"))
    r = await _authorize(h)
    assert r.status_code == 400 and "location" not in r.headers
    assert "invalid_client" in r.text


@pytest.mark.parametrize("missing", ["client_name", "redirect_uris"])
async def test_as09_required_field_missing_is_invalid_client(h: Harness, missing: str) -> None:
    serve(h, doc(**{missing: None}))
    r = await _authorize(h)
    assert r.status_code == 400 and "invalid_client" in r.text


async def test_as10_redirect_uri_not_in_document_is_shown_not_redirected(h: Harness) -> None:
    serve(h, doc())
    r = await _authorize(h, redirect_uri="http://127.0.0.1:3000/other")
    assert r.status_code == 400 and "location" not in r.headers


async def test_as19_document_with_non_loopback_http_redirect_is_refused(h: Harness) -> None:
    serve(h, doc(redirect_uris=["http://evil.example/cb"]))
    r = await _authorize(h, redirect_uri="http://evil.example/cb")
    assert r.status_code == 400 and "invalid_client" in r.text


async def test_cimd_oversize_document_is_refused(h: Harness) -> None:
    serve(h, doc(client_name="x" * 100, padding="y" * 6000))
    r = await _authorize(h)
    assert r.status_code == 400 and "invalid_client" in r.text


async def test_as12_fetcher_refusal_fails_closed(h: Harness) -> None:
    h.fetcher.errors[CID] = OSError("refused: private address")
    r = await _authorize(h)
    assert r.status_code == 400 and "invalid_client" in r.text
    assert "private address" not in r.text


async def test_cimd_http_error_status_is_refused(h: Harness) -> None:
    serve(h, b"", status=302)
    r = await _authorize(h)
    assert r.status_code == 400 and "invalid_client" in r.text


async def test_as11_document_cached_within_max_age(h: Harness) -> None:
    serve(h, doc())
    await _authorize(h)
    await _authorize(h)
    assert len(h.fetcher.calls) == 1
    h.clock.advance(601)
    await _authorize(h)
    assert len(h.fetcher.calls) == 2


def test_as11_cache_lifetime_is_capped_at_24h() -> None:
    assert cimd.cache_lifetime({"Cache-Control": "max-age=999999"}) == 86400
    assert cimd.cache_lifetime({"cache-control": "public, max-age=60"}) == 60
    assert cimd.cache_lifetime({"Cache-Control": "no-store"}) == 0
    assert cimd.cache_lifetime({}) == cimd.DEFAULT_CACHE_SECONDS


@pytest.mark.parametrize(
    ("client_id", "ok"),
    [
        (CID, True),
        ("https://app.example", False),
        ("https://app.example/", False),
        ("http://app.example/c.json", False),
        ("https://app.example/a/../c.json", False),
        ("https://user@app.example/c.json", False),
        ("https://app.example/c.json#x", False),
    ],
)
def test_cimd_client_id_shape(client_id: str, ok: bool) -> None:
    assert cimd.is_cimd_client_id(client_id) is ok


async def test_as13_cimd_consent_shows_unverified_and_client_host(h: Harness) -> None:
    serve(h, doc(redirect_uris=[CB]))
    r = await _authorize(h)
    r = await h.login(r.headers["location"])
    page = await h.http.get(r.headers["location"])
    assert "Unverified application" in page.text and "app.example" in page.text
    assert "127.0.0.1" in page.text and "Local application" in page.text


@pytest.fixture
async def h_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path, monkeypatch,
                                      cimd_allowed_hosts=["example"],
                                      cimd_denied_hosts=["bad.example"]):
        yield harness


async def test_as14_host_lists(h_lists: Harness) -> None:
    h = h_lists
    serve(h, doc())
    assert (await _authorize(h)).status_code == 303  # app.example is under "example"
    bad = "https://bad.example/c.json"
    params, _ = h.authorize_params(client_id=bad, redirect_uri=CB)
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 400 and "invalid_client" in r.text
    assert bad not in h.fetcher.calls  # refused before any fetch
    params, _ = h.authorize_params(client_id="https://elsewhere.org/c.json", redirect_uri=CB)
    r = await h.http.get("/authorize", params=params)
    assert r.status_code == 400 and "invalid_client" in r.text


@pytest.mark.parametrize("client_id", ["https://169.254.169.254/latest/meta-data.json",
                                       "https://10.0.0.1/client.json",
                                       "https://[::1]/client.json"])
async def test_as12_real_safe_fetcher_refuses_private_addresses(
    tmp_path: Path, client_id: str
) -> None:
    from bastion.clock import FixedClock
    from bastion.net import SafeFetcher
    from bastion.server.cimd_fetch import SafeDocumentFetcher, cimd_fetch_policy
    from bastion.server.clients import CimdResolver
    from tests.server.conftest import make_config

    settings = make_config(tmp_path).authorization_server
    async with SafeFetcher(cimd_fetch_policy()) as fetcher:
        resolver = CimdResolver(SafeDocumentFetcher(fetcher), settings, FixedClock(0.0))
        with pytest.raises(InvalidClient):
            await resolver.resolve(client_id)


@pytest.mark.parametrize("path", ["/slow", "/redirect", "/huge", "/wrong-type"])
async def test_as12_real_fetcher_refuses_slow_redirecting_oversize_documents(
    tmp_path: Path, path: str
) -> None:
    """A real loopback peer (loopback allowed for this test only) misbehaving four ways: the
    resolver fails closed with invalid_client, within the fetch time limit."""
    import asyncio
    import time as _time

    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse, Response, StreamingResponse
    from starlette.routing import Route

    from bastion.clock import FixedClock
    from bastion.net import SafeFetcher
    from bastion.server.cimd_fetch import SafeDocumentFetcher, cimd_fetch_policy
    from bastion.server.clients import CimdResolver
    from tests.server.conftest import make_config
    from tests.support import serve

    async def slow(request: object) -> StreamingResponse:
        async def drip() -> Any:
            yield b'{"client_id": "'
            for _ in range(60):
                await asyncio.sleep(1)
                yield b" "
        return StreamingResponse(drip(), media_type="application/json")

    async def redirect(request: object) -> RedirectResponse:
        return RedirectResponse("http://10.0.0.1/client.json", status_code=302)

    async def huge(request: object) -> Response:
        return Response(b'{"pad": "' + b"x" * 100_000 + b'"}', media_type="application/json")

    async def wrong_type(request: object) -> Response:
        return Response(b"<html></html>", media_type="text/html")

    urls: list[str] = []

    async def good(request: object) -> Response:
        return Response(json.dumps({"client_id": urls[0], "client_name": "Good",
                                    "redirect_uris": ["http://localhost:3000/callback"]}),
                        media_type="application/json")

    app = Starlette(routes=[Route("/slow", slow), Route("/redirect", redirect),
                            Route("/huge", huge), Route("/wrong-type", wrong_type),
                            Route("/good", good)])
    settings = make_config(tmp_path, allow_http_loopback=True).authorization_server
    async with serve(app) as base, \
            SafeFetcher(cimd_fetch_policy(allow_http_loopback=True)) as fetcher:
        resolver = CimdResolver(SafeDocumentFetcher(fetcher), settings, FixedClock(0.0))
        urls.append(base + "/good")
        assert (await resolver.resolve(base + "/good")).client_name == "Good"  # control
        started = _time.monotonic()
        with pytest.raises(InvalidClient):
            await resolver.resolve(base + path)
        assert _time.monotonic() - started < 10


@pytest.mark.parametrize("grants", [["client_credentials"],
                                    ["authorization_code", "client_credentials"]])
async def test_cimd_document_asking_for_client_credentials_is_refused(
    h: Harness, grants: list[str]
) -> None:
    """A self-described client gets no token without a user: a document that asks for
    client_credentials is refused with a reason, not quietly trimmed."""
    serve(h, doc(grant_types=grants))
    r = await _authorize(h)
    assert r.status_code == 400 and "location" not in r.headers
    assert "invalid_client" in r.text and "client_credentials" in r.text


@pytest.mark.parametrize("client_uri", ["javascript:alert(1)", "data:text/html,x",
                                        "http://app.example/", 42])
async def test_cimd_client_uri_must_be_https(h: Harness, client_uri: object) -> None:
    serve(h, doc(client_uri=client_uri))
    r = await _authorize(h)
    assert r.status_code == 400 and "invalid_client" in r.text and "client_uri" in r.text


async def test_cimd_https_client_uri_is_kept(h: Harness) -> None:
    serve(h, doc(client_uri="https://app.example/"))
    assert (await _authorize(h)).status_code == 303
    client = await h.server.clients.get(CID)
    assert client.client_uri == "https://app.example/"
