"""Test support: real servers on loopback, a test issuer, a recording upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bastion.gateway.asgi import ASGIApp, Receive, Scope, Send


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 inside the current loop; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 15
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server did not start")
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start in time")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@dataclass
class SigningIssuer:
    """An authorization server's signing key, for minting tokens directly in tests."""

    issuer: str = "https://as.test.example"
    key: ECKey = field(default_factory=lambda: ECKey.generate_key(
        "P-256", parameters={"kid": "test-key-1", "alg": "ES256", "use": "sig"}))

    def key_set(self) -> KeySet:
        return KeySet.import_key_set({"keys": [self.key.as_dict(private=False)]})

    def mint(self, *, audience: str | list[str], scope: str = "", subject: str = "alice",
             client_id: str = "client-1", lifetime: int = 300, now: float | None = None,
             header: Mapping[str, Any] | None = None, **claims: Any) -> str:
        now = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer, "sub": subject, "aud": audience, "client_id": client_id,
            "scope": scope, "iat": int(now), "nbf": int(now), "exp": int(now + lifetime),
            "jti": f"jti-{time.monotonic_ns()}",
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"alg": "ES256", "kid": self.key.kid, "typ": "at+jwt", **(header or {})}
        return jwt.encode(hdr, payload, self.key)


@dataclass
class Recorder:
    """Wraps an ASGI app and records the headers of every request it receives."""

    app: ASGIApp
    requests: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


class HeadlessUser:
    """A person at a browser, without the browser: follows the authorization server's
    redirects, fills in the login form, approves consent, and stops at the client's redirect.

    Cookies are kept by hand: the ``__Host-`` cookies are ``Secure``, which a plain-http client
    jar would drop, while browsers treat loopback as a secure context.
    """

    def __init__(self, username: str, password: str, *, approve: bool = True) -> None:
        self.username, self.password, self.approve = username, password, approve
        self.cookies: dict[str, str] = {}
        self.pages: list[str] = []

    def _keep(self, resp: Any) -> None:
        for raw in resp.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]

    def _cookie_header(self) -> dict[str, str]:
        if not self.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    async def authorize(self, url: str, redirect_prefix: str) -> dict[str, str]:
        """Return the query of the final redirect to ``redirect_prefix``."""
        import html
        import re
        from urllib.parse import parse_qsl, urljoin, urlsplit

        import httpx

        async with httpx.AsyncClient(timeout=15, follow_redirects=False) as http:
            resp = await http.get(url, headers=self._cookie_header())
            for _ in range(10):
                self._keep(resp)
                if resp.status_code in (302, 303):
                    location = urljoin(str(resp.url), resp.headers["location"])
                    if location.startswith(redirect_prefix):
                        return dict(parse_qsl(urlsplit(location).query))
                    resp = await http.get(location, headers=self._cookie_header())
                    continue
                if resp.status_code != 200:
                    raise AssertionError(f"authorization stopped at HTTP {resp.status_code}: "
                                         f"{resp.text[:300]}")
                page = resp.text
                self.pages.append(page)
                form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page,
                                 re.S)
                if form is None:
                    raise AssertionError(f"no form on the page: {page[:300]}")
                fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                         form.group(2)))
                fields = {k: html.unescape(v) for k, v in fields.items()}
                if 'name="password"' in form.group(2):
                    fields.update(username=self.username, password=self.password)
                else:
                    fields["decision"] = "approve" if self.approve else "deny"
                action = urljoin(str(resp.url), html.unescape(form.group(1)))
                origin = "{0.scheme}://{0.netloc}".format(urlsplit(action))
                resp = await http.post(action, data=fields,
                                       headers={**self._cookie_header(), "origin": origin})
        raise AssertionError("too many steps in the authorization flow")
