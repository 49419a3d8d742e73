"""Reads the body once (with size and time limits), parses the JSON-RPC envelope, and applies
the protocol-era header rules. Results go down in the scope: BODY, ENVELOPE, ERA."""

from __future__ import annotations

import asyncio

from bastion.errors import JsonRpcError
from bastion.gateway.asgi import (
    BODY,
    ENVELOPE,
    ERA,
    ASGIApp,
    Receive,
    Scope,
    Send,
    header,
    headers_dict,
)
from bastion.gateway.responses import send_jsonrpc_error, send_response
from bastion.mcp.eras import MODERN, Era, check_message_kind, check_modern_headers, classify
from bastion.mcp.jsonrpc import parse_envelope

__all__ = ["BodyTooLarge", "McpEnvelope", "read_body"]


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class McpEnvelope:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "DELETE"):
            if header(scope, b"mcp-protocol-version") == MODERN:
                # TS-13: the 2026-07-28 era has no GET stream and no sessions to delete.
                await send_response(send, 405, b"", [(b"allow", b"POST")])
                return
            scope[ERA] = Era.LEGACY
            await self.app(scope, receive, send)
            return
        if method != "POST":
            await send_response(send, 405, b"", [(b"allow", b"GET, POST, DELETE")])
            return
        try:
            await self._post(scope, receive, send)
        except JsonRpcError as exc:
            await send_jsonrpc_error(send, exc)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = headers_dict(scope)  # built once per request, kept in the scope for the proxy
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                               "Invalid Request: Content-Type must be application/json",
                               http_status=415)
        length = headers.get("content-length")
        if length is not None and not (length.isascii() and length.isdigit()):
            # servers in front reject this already; the app does not count on it
            raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                               "Invalid Request: Content-Length must be a decimal number",
                               http_status=400)
        if length is not None and int(length) > self.max_body_bytes:
            raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                               f"Request body larger than {self.max_body_bytes} bytes",
                               http_status=413)
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge:
            raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                               f"Request body larger than {self.max_body_bytes} bytes",
                               http_status=413) from None
        except TimeoutError:
            raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                               "Request body not received in time", http_status=408) from None
        except ConnectionResetError:
            return
        envelope = parse_envelope(body)
        era = classify(headers, envelope)
        if era is Era.MODERN:
            check_modern_headers(headers, envelope)
        check_message_kind(era, envelope)
        scope[BODY] = body
        scope[ENVELOPE] = envelope
        scope[ERA] = era
        await self.app(scope, receive, send)
