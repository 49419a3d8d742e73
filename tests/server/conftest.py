"""A real authorization server (Starlette app, SQLite store, real keys) driven through httpx's
ASGI transport over https://as.test, so __Host- cookies behave as in a browser; and the whole
of Bastion as ``bastion serve`` runs it (``build_runtime``, uvicorn on 127.0.0.1), for what a
user meets over a real connection."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from bastion.clock import FixedClock, OffsetClock
from bastion.config.load import parse_config
from bastion.config.model import BastionConfig
from bastion.keys import SigningKeys
from bastion.passwords import hash_password
from bastion.runtime import Runtime, build_runtime
from bastion.server.app import build_authorization_server, routes_for
from bastion.server.context import AuthorizationServer
from bastion.storage import Store, UserRecord, open_store
from tests.support import free_port, serve

ISSUER = "https://as.test"
RESOURCE = "https://as.test/mcp"
OTHER_RESOURCE = "https://as.test/files"
REDIRECT = "http://localhost:3000/callback"
PUBLIC_CLIENT = "demo"
CONFIDENTIAL_CLIENT = "svc"
CONFIDENTIAL_SECRET = "s3cret-for-tests-only-0123456789"
PASSWORD = "correct horse battery staple"


def make_config(tmp_path: Path, **as_overrides: Any) -> BastionConfig:
    data: dict[str, Any] = {
        "server": {"public_url": ISSUER},
        "data_dir": str(tmp_path),
        "authorization_server": {
            "scopes": ["profile"],
            "clients": [
                {"client_id": PUBLIC_CLIENT, "client_name": "Demo App",
                 "redirect_uris": [REDIRECT, "https://app.example/cb?x=1"]},
                {"client_id": "other", "client_name": "Other",
                 "redirect_uris": ["http://127.0.0.1:4000/cb"]},
                {"client_id": "noref", "client_name": "No refresh",
                 "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"]},
                {"client_id": CONFIDENTIAL_CLIENT, "client_name": "Service",
                 "redirect_uris": ["https://svc.example/cb"],
                 "token_endpoint_auth_method": "client_secret_basic",
                 "secret": {"env": "BASTION_TEST_SVC_SECRET"},
                 "grant_types": ["client_credentials", "authorization_code", "refresh_token"]},
            ],
            **as_overrides,
        },
        "mounts": [
            {"name": "mcp", "path": "/mcp", "upstream": {"url": "http://127.0.0.1:9/mcp"},
             "scopes": ["mcp:read"], "tool_scopes": {"write_file": ["mcp:write"]}},
            {"name": "files", "path": "/files", "upstream": {"url": "http://127.0.0.1:9/f"},
             "scopes": ["files:read"]},
            {"name": "open", "path": "/open", "upstream": {"url": "http://127.0.0.1:9/o"},
             "public": True},
        ],
    }
    return parse_config(data, source="test")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


@dataclass
class Harness:
    http: httpx.AsyncClient
    server: AuthorizationServer
    store: Store
    keys: SigningKeys
    clock: FixedClock
    config: BastionConfig
    fetcher: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def authorize_params(self, **overrides: str | None) -> tuple[dict[str, str], str]:
        verifier, challenge = pkce_pair()
        params: dict[str, str | None] = {
            "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": "st-123",
            "resource": RESOURCE, "scope": "mcp:read",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}, verifier

    async def login(self, location: str, username: str = "alice",
                    password: str = PASSWORD) -> httpx.Response:
        page = await self.http.get(location)
        assert page.status_code == 200, page.text
        return await self.http.post(location.split("?")[0], data={
            "request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
            "username": username, "password": password,
        })

    async def get_code(self, **overrides: str | None) -> tuple[str, str, dict[str, str]]:
        """Run authorize -> login -> consent; return (code, verifier, params)."""
        params, verifier = self.authorize_params(**overrides)
        r = await self.http.get("/authorize", params=params)
        assert r.status_code in (302, 303), r.text
        location = r.headers["location"]
        if location.startswith("/login"):
            r = await self.login(location)
            assert r.status_code == 303, r.text
            location = r.headers["location"]
        if location.startswith("/consent"):
            page = await self.http.get(location)
            assert page.status_code == 200, page.text
            r = await self.http.post("/consent", data={
                "request": hidden(page.text, "request"), "csrf": hidden(page.text, "csrf"),
                "decision": "approve",
            })
            assert r.status_code == 303, r.text
            location = r.headers["location"]
        q = query_of(location)
        assert "code" in q, location
        return q["code"], verifier, params

    async def exchange(self, code: str, verifier: str, *, client_id: str = PUBLIC_CLIENT,
                       redirect_uri: str = REDIRECT, **extra: str) -> httpx.Response:
        return await self.http.post("/token", data={
            "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "client_id": client_id, "redirect_uri": redirect_uri, **extra,
        })

    async def refresh(self, token: str, client_id: str = PUBLIC_CLIENT,
                      **extra: str) -> httpx.Response:
        return await self.http.post("/token", data={
            "grant_type": "refresh_token", "refresh_token": token, "client_id": client_id,
            **extra,
        })


class FakeFetcher:
    """Stands in for bastion.net's SafeFetcher: returns canned documents, counts calls."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[int, Mapping[str, str], bytes]] = {}
        self.errors: dict[str, Exception] = {}
        self.calls: list[str] = []

    async def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        self.calls.append(url)
        if url in self.errors:
            raise self.errors[url]
        if url not in self.documents:
            return 404, {}, b""
        return self.documents[url]


async def make_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       **as_overrides: Any) -> AsyncIterator[Harness]:
    monkeypatch.setenv("BASTION_TEST_SVC_SECRET", CONFIDENTIAL_SECRET)
    config = make_config(tmp_path, **as_overrides)
    clock = FixedClock(1_800_000_000.0)
    store = await open_store(None, tmp_path)
    keys = SigningKeys.load_or_create(tmp_path, now=clock.now)
    fetcher = FakeFetcher()
    server = build_authorization_server(config, store, keys, clock, fetcher)
    await store.create_user(UserRecord("alice", "sub-alice", hash_password(PASSWORD), clock.now()))
    app = Starlette(routes=routes_for(server))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield Harness(http, server, store, keys, clock, config, fetcher)
    await store.close()


@pytest.fixture
async def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    async for harness in make_harness(tmp_path, monkeypatch):
        yield harness


@dataclass
class Live:
    """Bastion served on loopback. The AS marks its cookies Secure (``__Host-``), which an
    HTTP client keeps back from http://127.0.0.1, so they are carried here by hand."""

    base: str
    runtime: Runtime
    clock: OffsetClock
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        store: Store = self.runtime.extras["store"]
        return store

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.cookies:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as http:
            r = await http.request(method, path, headers=headers, **kwargs)
        for raw in r.headers.get_list("set-cookie"):
            name, _, rest = raw.partition("=")
            self.cookies[name] = rest.split(";")[0]
        return r


def live_config(tmp_path: Path, port: int, **as_overrides: Any) -> BastionConfig:
    return parse_config({
        "data_dir": str(tmp_path / "data"), "server": {"port": port},
        "authorization_server": {
            "scopes": ["profile"],
            "clients": [{"client_id": PUBLIC_CLIENT, "client_name": "Demo App",
                         "redirect_uris": [REDIRECT]}],
            **as_overrides,
        },
        "mounts": [{"name": "mcp", "path": "/mcp", "scopes": ["mcp:read"],
                    "tool_scopes": {"write_file": ["mcp:write"]},
                    "upstream": {"url": "http://127.0.0.1:9/mcp"}}],
    }, source="test")


async def make_live(tmp_path: Path, **as_overrides: Any) -> AsyncIterator[Live]:
    port = free_port()
    clock = OffsetClock()
    runtime = await build_runtime(live_config(tmp_path, port, **as_overrides), source="test",
                                  clock=clock)
    store: Store = runtime.extras["store"]
    await store.create_user(UserRecord("alice", "sub-alice", hash_password(PASSWORD),
                                       clock.now()))
    async with serve(runtime.app, port) as base:
        yield Live(base, runtime, clock)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    async for running in make_live(tmp_path):
        yield running
