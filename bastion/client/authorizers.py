"""Authorizers: how the authorization URL reaches the resource owner and the callback returns.

``HeadlessAuthorizer`` is for agents and CI against an AS that redirects without interaction:
it GETs the URL through the SSRF-safe fetcher without following the redirect and reads the
``Location``. ``LoopbackBrowserAuthorizer`` opens the system browser (never through a shell,
CL-36) and listens for the redirect on a loopback port (RFC 8252 §7.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import webbrowser
from collections.abc import Callable, Mapping
from typing import Final, Protocol
from urllib.parse import parse_qsl, urlsplit

import httpx

from bastion.client.authorization import check_authorization_url
from bastion.client.errors import AuthorizationResponseError, ClientAuthError
from bastion.net.fetcher import SafeFetcher

__all__ = ["Authorizer", "HeadlessAuthorizer", "LoopbackBrowserAuthorizer"]

DEFAULT_HEADLESS_REDIRECT: Final = "http://127.0.0.1:3000/callback"
CALLBACK_PAGE: Final = (
    b"<!doctype html><meta charset=utf-8><title>Authorization complete</title>"
    b"<p>Authorization is complete. You can close this window.</p>"
)
MAX_REQUEST_HEAD: Final = 16 * 1024


class Authorizer(Protocol):
    """Takes the user (or an automaton) through the authorization URL; returns the callback
    query parameters untouched (they are validated by the caller)."""

    @property
    def redirect_uri(self) -> str: ...

    async def authorize(self, url: str) -> Mapping[str, str]: ...


def _same_endpoint(location: str, redirect_uri: str) -> bool:
    a, b = urlsplit(location), urlsplit(redirect_uri)
    return (a.scheme.lower(), a.netloc.lower(), a.path) == (b.scheme.lower(), b.netloc.lower(),
                                                            b.path)


class HeadlessAuthorizer:
    """For an AS that answers the authorization request with a redirect straight away."""

    def __init__(self, fetcher: SafeFetcher, redirect_uri: str = DEFAULT_HEADLESS_REDIRECT) -> None:
        self._fetcher = fetcher
        self._redirect_uri = redirect_uri

    @property
    def redirect_uri(self) -> str:
        return self._redirect_uri

    async def authorize(self, url: str) -> Mapping[str, str]:
        check_authorization_url(url, allow_http_loopback=self._fetcher.policy.allow_http_loopback)
        async with self._fetcher.client() as http:
            response = await http.get(url)
        location = response.headers.get("Location")
        if not response.is_redirect or not location:
            raise ClientAuthError(
                f"headless authorization needs a redirect, the authorization server answered "
                f"HTTP {response.status_code} (it probably wants a person: use a browser)")
        target = str(httpx.URL(url).join(location))
        if not _same_endpoint(target, self._redirect_uri):
            raise AuthorizationResponseError("the authorization server redirected elsewhere")
        return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))


class LoopbackBrowserAuthorizer:
    """Opens the browser and waits for one callback on ``http://127.0.0.1:PORT/callback``.

    ``opener`` defaults to ``webbrowser.open``, which starts the browser with an argument list,
    never a shell command line. The URL is checked again right before it is opened.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        path: str = "/callback",
        opener: Callable[[str], object] = webbrowser.open,
        timeout: float = 300.0,
        allow_http_loopback: bool = False,
    ) -> None:
        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
        self.port, self.path, self.timeout = port, path, timeout
        self._opener = opener
        self._allow_http_loopback = allow_http_loopback

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def authorize(self, url: str) -> Mapping[str, str]:
        check_authorization_url(url, allow_http_loopback=self._allow_http_loopback)
        loop = asyncio.get_running_loop()
        result: asyncio.Future[dict[str, str]] = loop.create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if len(head) > MAX_REQUEST_HEAD:
                    return
                method, _, rest = head.decode("latin-1").partition(" ")
                target = rest.split(" ", 1)[0]
                parts = urlsplit(target)
                if method != "GET" or parts.path != self.path:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                             b"Cache-Control: no-store\r\nConnection: close\r\n"
                             + f"Content-Length: {len(CALLBACK_PAGE)}\r\n\r\n".encode()
                             + CALLBACK_PAGE)
                if not result.done():
                    result.set_result(dict(parse_qsl(parts.query, keep_blank_values=True)))
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    UnicodeDecodeError):
                return
            finally:
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", self.port, reuse_address=True)
        try:
            await asyncio.to_thread(self._opener, url)
            return await asyncio.wait_for(result, self.timeout)
        except TimeoutError:
            raise ClientAuthError(
                f"no authorization callback within {self.timeout:.0f} s") from None
        finally:
            server.close()
            await server.wait_closed()
