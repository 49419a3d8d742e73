"""Wiring CIMD to the one door out: ``SafeFetcher`` (``bastion.net``) as a ``DocumentFetcher``.

The gateway builds one fetcher with ``cimd_fetch_policy()`` and passes
``SafeDocumentFetcher(fetcher)`` as ``cimd_fetcher`` to ``build_authorization_server_routes``.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.net import FetchPolicy, SafeFetcher
from bastion.oauth.cimd import MAX_DOCUMENT_BYTES

__all__ = ["CIMD_TIMEOUT_SECONDS", "SafeDocumentFetcher", "cimd_fetch_policy"]

CIMD_TIMEOUT_SECONDS = 5.0


def cimd_fetch_policy(*, allow_http_loopback: bool = False) -> FetchPolicy:
    """No redirects, 5 KB (SEP-991), 5 s, JSON content types."""
    return FetchPolicy(
        allow_http_loopback=allow_http_loopback,
        max_bytes=MAX_DOCUMENT_BYTES,
        timeout_seconds=CIMD_TIMEOUT_SECONDS,
        max_redirects=0,
    )


class SafeDocumentFetcher:
    def __init__(self, fetcher: SafeFetcher) -> None:
        self._fetcher = fetcher

    async def get(self, url: str) -> tuple[int, Mapping[str, str], bytes]:
        result = await self._fetcher.get(url, headers={"Accept": "application/json"})
        return result.status, dict(result.headers.items()), result.body
