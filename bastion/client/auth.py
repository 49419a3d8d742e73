"""``McpOAuth``: the client flow as an ``httpx.Auth``, a thin driver over the session.

Per request: attach the token (only to the server's own origin, only in the header, CL-32/33);
on 401 let the session discover and authorize, then send once more; on 403
``insufficient_scope`` let it step up while the budget lasts (CL-12..14). Everything else is
in the steps and the session, so this generator can be driven by hand in tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Generator, Iterable
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from bastion.client.challenge import Challenge, parse_challenge
from bastion.client.token_requests import TokenSet

__all__ = ["McpOAuth", "SessionLike", "operation_of"]


class SessionLike(Protocol):
    """What the driver needs from ``OAuthSession`` (a fake in tests)."""

    def origin_matches(self, url: str) -> bool: ...
    async def current_token(self) -> TokenSet | None: ...
    async def handle_unauthorized(self, challenge: Challenge | None,
                                  rejected: TokenSet | None) -> TokenSet: ...
    async def step_up(self, challenge: Challenge, operation: str) -> TokenSet | None: ...
    def operation_succeeded(self, operation: str) -> None: ...
    async def aclose(self) -> None: ...


def operation_of(method: str, body: bytes) -> str:
    """The step-up budget key: the JSON-RPC method and the tool, resource or prompt named."""
    try:
        message = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return method
    params = message.get("params")
    target = ""
    if isinstance(params, dict):
        for key in ("name", "uri"):
            if isinstance(params.get(key), str):
                target = params[key]
                break
    return f"{message['method']} {target}".strip()


def _header_values(headers: Any, name: str) -> Iterable[str]:
    getter = getattr(headers, "get_list", None)
    if getter is not None:
        return list(getter(name))
    value = headers.get(name)
    return [value] if value else []


class McpOAuth(httpx.Auth):
    """Use as ``httpx.AsyncClient(auth=McpOAuth(session))``; for the official SDK's httpx2
    transport wrap it in ``bastion.client.httpx2_adapter.Httpx2McpOAuth``."""

    requires_request_body = True

    def __init__(self, session: SessionLike) -> None:
        self.session = session

    async def aclose(self) -> None:
        """Release the OAuth fetcher's connections (``async with McpOAuth(...)`` does it)."""
        await self.session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response,
                                                                  None]:
        raise RuntimeError("McpOAuth does its OAuth I/O asynchronously: use httpx.AsyncClient")
        yield request  # pragma: no cover - makes this a generator

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        body = await request.aread()
        operation = operation_of(request.method, body)
        tokens = await self.session.current_token()
        self._attach(request, tokens)
        response = yield request

        if response.status_code == 401:
            challenge = parse_challenge(_header_values(response.headers, "WWW-Authenticate"))
            tokens = await self.session.handle_unauthorized(challenge, tokens)
            self._attach(request, tokens)
            response = yield request

        while response.status_code == 403:
            challenge = parse_challenge(_header_values(response.headers, "WWW-Authenticate"))
            if challenge is None or not challenge.insufficient_scope:
                break
            stepped = await self.session.step_up(challenge, operation)
            if stepped is None:
                break
            self._attach(request, stepped)
            response = yield request

        if response.status_code < 400:
            self.session.operation_succeeded(operation)

    def _attach(self, request: httpx.Request, tokens: TokenSet | None) -> None:
        if tokens is None or not self.session.origin_matches(str(request.url)):
            request.headers.pop("Authorization", None)
            return
        request.headers["Authorization"] = f"{tokens.token_type} {tokens.access_token}"
