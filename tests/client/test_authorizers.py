"""The browser authorizer: the URL is checked before any opener sees it, the opener is a
plain callable (``webbrowser.open`` by default, no shell), and the loopback listener returns
the callback's query."""

from __future__ import annotations

import urllib.request
from urllib.parse import urlencode

import pytest

from bastion.client import LoopbackBrowserAuthorizer, UnsafeAuthorizationUrl


async def test_loopback_listener_returns_the_callback_query() -> None:
    opened: list[str] = []

    def browser(url: str) -> bool:
        opened.append(url)
        query = urlencode({"code": "c0de", "state": "st", "iss": "https://as.example"})
        with urllib.request.urlopen(f"{authorizer.redirect_uri}?{query}", timeout=5) as page:
            assert b"close this window" in page.read()
        return True

    authorizer = LoopbackBrowserAuthorizer(opener=browser, timeout=10)
    assert authorizer.redirect_uri.startswith("http://127.0.0.1:")
    params = await authorizer.authorize("https://as.example/authorize?client_id=x")
    assert params == {"code": "c0de", "state": "st", "iss": "https://as.example"}
    assert opened == ["https://as.example/authorize?client_id=x"]


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://a.example/$(id)",
                                 "http://a.example/authorize"])
async def test_unsafe_urls_never_reach_the_opener(url: str) -> None:
    opened: list[str] = []
    authorizer = LoopbackBrowserAuthorizer(opener=opened.append, timeout=1)
    with pytest.raises(UnsafeAuthorizationUrl):
        await authorizer.authorize(url)
    assert opened == []
