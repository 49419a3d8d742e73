"""Every response the gateway makes itself is rendered here: challenges, JSON-RPC errors."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bastion.errors import BearerError, JsonRpcError
from bastion.gateway.asgi import Send
from bastion.mcp.jsonrpc import error_body
from bastion.oauth.rfc6750 import build_challenge

__all__ = ["send_bearer_error", "send_json", "send_jsonrpc_error", "send_response"]

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


async def send_response(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    raw = [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: object, *, cache: bool = False) -> None:
    body = json.dumps(data, separators=(",", ":")).encode()
    headers = [_JSON] if cache else [_JSON, _NO_STORE]
    await send_response(send, status, body, headers)


async def send_jsonrpc_error(send: Send, error: JsonRpcError) -> None:
    body = error_body(error.code, error.message, error.request_id, error.data)
    status = error.http_status if error.http_status >= 400 else 200
    await send_response(send, status, body, [_JSON])


async def send_bearer_error(
    send: Send,
    error: BearerError,
    *,
    resource_metadata: str,
    scopes: Sequence[str] = (),
) -> None:
    """401/403/400 with the one ``WWW-Authenticate`` challenge (RS-05, RS-10, RS-13..RS-15)."""
    challenge = build_challenge(error, resource_metadata=resource_metadata,
                                scopes=scopes or error.scopes)
    payload: dict[str, str] = {"error": error.error or "unauthorized"}
    if error.description:
        payload["error_description"] = error.description
    body = json.dumps(payload).encode()
    await send_response(
        send,
        error.status,
        body,
        [_JSON, _NO_STORE, (b"www-authenticate", challenge.encode("latin-1"))],
    )
