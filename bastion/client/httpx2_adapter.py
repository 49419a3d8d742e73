"""The same flow for ``httpx2``, the HTTP client of the official MCP Python SDK's transport.

``httpx2.Auth`` has httpx's generator protocol but is a different class, so an
``httpx.Auth`` is refused by ``httpx2.AsyncClient``. The driver only reads and sets headers
on the request it is given, so its generator works unchanged with httpx2's objects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any, cast

import httpx2

from bastion.client.auth import McpOAuth

__all__ = ["Httpx2McpOAuth"]


class Httpx2McpOAuth(httpx2.Auth):
    """``httpx2.AsyncClient(auth=Httpx2McpOAuth(McpOAuth(session)))``."""

    requires_request_body = True

    def __init__(self, auth: McpOAuth) -> None:
        self.auth = auth

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request,
                                                                   httpx2.Response, None]:
        raise RuntimeError("McpOAuth does its OAuth I/O asynchronously: use httpx2.AsyncClient")
        yield request  # pragma: no cover - makes this a generator

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow: Any = self.auth.async_auth_flow(cast(Any, request))
        return cast(AsyncGenerator[httpx2.Request, httpx2.Response], flow)
