"""The upstream interface: an MCP server reached over Streamable HTTP or spawned over stdio.

Both kinds answer the same HTTP-shaped exchange, so the proxy has one code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["ANONYMOUS", "Caller", "Upstream", "UpstreamError", "UpstreamResponse",
           "UpstreamTimeout"]

# Who a request is made for: (issuer, subject, client_id) of the verified token (invariant 2).
Caller = tuple[str, str, str]
ANONYMOUS: Caller = ("", "", "")


class UpstreamError(Exception):
    """The upstream cannot be reached or broke off (answered 502)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (answered 504)."""


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]  # lower-case names
    stream: AsyncIterator[bytes]
    closers: list[object] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    async def aclose(self) -> None:
        aclose = getattr(self.stream, "aclose", None)
        if aclose is not None:
            await aclose()
        for c in self.closers:
            close = getattr(c, "aclose", None)
            if close is not None:
                await close()


class Upstream(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    async def request(
        self, method: str, headers: Mapping[str, str], body: bytes | None,
        caller: Caller = ANONYMOUS,
    ) -> UpstreamResponse:
        """One exchange. ``caller`` is whom it is made for: an upstream that keeps state per
        caller (a stdio child) never lets one caller's messages reach another."""
        ...
