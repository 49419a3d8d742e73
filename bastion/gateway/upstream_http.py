"""Streamable HTTP upstream, through one pooled httpx client per mount."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from bastion.gateway.upstream import UpstreamError, UpstreamResponse, UpstreamTimeout

__all__ = ["HttpUpstream"]


class HttpUpstream:
    def __init__(
        self,
        url: str,
        *,
        credentials: Mapping[str, str],
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.url = url
        self.credentials = dict(credentials)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout,
                                  pool=connect_timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            follow_redirects=False,
            trust_env=False,
        )

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self, method: str, headers: Mapping[str, str], body: bytes | None
    ) -> UpstreamResponse:
        all_headers = {**headers, **self.credentials}
        req = self._client.build_request(method, self.url, headers=all_headers, content=body)
        # A long-lived GET event stream has no read deadline; requests keep theirs.
        if method == "GET":
            req.extensions["timeout"] = {**req.extensions["timeout"], "read": None}
        try:
            resp = await self._client.send(req, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("the upstream server did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError("the upstream server cannot be reached") from exc
        return UpstreamResponse(
            status=resp.status_code,
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1"))
                     for k, v in resp.headers.raw],
            stream=_chunks(resp),
        )


async def _chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_bytes():
            yield chunk
    except httpx.TimeoutException as exc:
        raise UpstreamTimeout("the upstream server stopped answering") from exc
    except httpx.HTTPError as exc:
        raise UpstreamError("the upstream connection broke") from exc
    finally:
        await resp.aclose()
