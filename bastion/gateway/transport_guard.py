"""TS-01..TS-03: Origin checked on every request; Host checked when bound to loopback.

A request with two ``Host`` header lines (RFC 9112 §3.2: answered 400) or two
``Authorization`` lines is refused whatever the route: each part of a chain could read a
different one, and the gateway would not know which it checked.

Defends against DNS rebinding: a browser page on another origin, or a name that resolves to
127.0.0.1, must not reach a local gateway.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from bastion.errors import JsonRpcError
from bastion.gateway.asgi import ASGIApp, Receive, Scope, Send, header
from bastion.gateway.responses import send_jsonrpc_error

__all__ = ["TransportGuard", "origin_of"]

_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_SINGLE = (b"host", b"authorization")  # header fields a request may carry at most once


def _repeated(scope: Scope) -> bytes | None:
    """The first of ``_SINGLE`` that the request carries more than once."""
    seen: set[bytes] = set()
    for key, _ in scope["headers"]:
        if key in _SINGLE:
            if key in seen:
                return bytes(key)
            seen.add(key)
    return None


def origin_of(url: str) -> str:
    p = urlsplit(url)
    scheme = p.scheme.lower()
    host = (p.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{p.port}" if p.port and p.port != default else ""
    return f"{scheme}://{host}{port}"


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class TransportGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Iterable[str],
        check_host: bool,
        allowed_hosts: Iterable[str] = (),
        check_origin: bool = True,
    ) -> None:
        self.app = app
        self.check_origin = check_origin
        self.allowed_origins = frozenset(origin_of(o) for o in allowed_origins)
        self.check_host = check_host
        self.allowed_hosts = frozenset(_host_name(h) for h in allowed_hosts) | _LOOPBACK_NAMES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        repeated = _repeated(scope)
        if repeated is not None:
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.INVALID_REQUEST,
                f"Bad Request: more than one {repeated.decode().title()} header",
                http_status=400))
            return
        origin = header(scope, b"origin") if self.check_origin else None
        if origin is not None and (origin == "null" or origin_of(origin)
                                   not in self.allowed_origins):
            await send_jsonrpc_error(send, JsonRpcError(
                JsonRpcError.INVALID_REQUEST, "Forbidden: Origin not allowed", http_status=403))
            return
        if self.check_host:
            host = header(scope, b"host")
            if host is None or _host_name(host) not in self.allowed_hosts:
                await send_jsonrpc_error(send, JsonRpcError(
                    JsonRpcError.INVALID_REQUEST, "Misdirected request: Host not allowed",
                    http_status=421))
                return
        await self.app(scope, receive, send)
