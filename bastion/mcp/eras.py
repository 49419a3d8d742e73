"""Protocol eras and the 2026-07-28 header rules (TS-12..TS-15).

- 2025-11-25 and earlier: ``initialize``, ``Mcp-Session-Id``, GET event stream.
- 2026-07-28: stateless; ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` on every
  POST, checked against the body.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from enum import Enum

from bastion.errors import JsonRpcError
from bastion.mcp.jsonrpc import Envelope
from bastion.mcp.methods import client_notification_allowed

__all__ = [
    "LEGACY_VERSIONS",
    "MODERN",
    "SUPPORTED_VERSIONS",
    "Era",
    "check_message_kind",
    "check_modern_headers",
    "classify",
    "decode_header_value",
]

MODERN = "2026-07-28"
LEGACY_VERSIONS: tuple[str, ...] = ("2025-11-25", "2025-06-18", "2025-03-26")
SUPPORTED_VERSIONS: tuple[str, ...] = (MODERN, *LEGACY_VERSIONS)
META_VERSION = "io.modelcontextprotocol/protocolVersion"


class Era(Enum):
    LEGACY = "legacy"
    MODERN = "modern"


_B64_WORD = re.compile(r"^=\?base64\?([A-Za-z0-9+/]*={0,2})\?=$")
_VISIBLE = re.compile(r"^[\x20-\x7E]*$")


def decode_header_value(value: str) -> str:
    """Decode a ``=?base64?...?=`` header value (2026-07-28), else return it unchanged."""
    m = _B64_WORD.match(value)
    if not m:
        if not _VISIBLE.match(value):
            raise JsonRpcError(JsonRpcError.HEADER_MISMATCH,
                               "Header value contains characters that are not allowed",
                               http_status=400)
        return value
    try:
        return base64.b64decode(m.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise JsonRpcError(JsonRpcError.HEADER_MISMATCH, "Header value is not valid base64",
                           http_status=400) from exc


def _unsupported(version: str, request_id: object) -> JsonRpcError:
    # -32022 is an error of the 2026-07-28 request format, so it lists what that format can
    # carry (older versions are negotiated with ``initialize`` instead).
    return JsonRpcError(
        JsonRpcError.UNSUPPORTED_PROTOCOL_VERSION,
        f"Unsupported protocol version: {version[:40]}",
        http_status=400,
        data={"supported": [MODERN], "requested": version[:40]},
        request_id=request_id,
    )


def classify(headers: Mapping[str, str], envelope: Envelope) -> Era:
    """Which era a POST speaks. Raises for an unsupported version header."""
    header = headers.get("mcp-protocol-version")
    meta_version = envelope.meta.get(META_VERSION)
    if header is not None and header not in SUPPORTED_VERSIONS:
        raise _unsupported(header, envelope.id)
    if header == MODERN or meta_version == MODERN:
        return Era.MODERN
    if isinstance(meta_version, str) and header is None and envelope.method != "initialize":
        # A body that claims a modern era we do not know: not a legacy request either.
        raise _unsupported(meta_version, envelope.id)
    return Era.LEGACY


def check_modern_headers(headers: Mapping[str, str], envelope: Envelope) -> None:
    """TS-14/TS-15: headers present and equal to the body, else 400 with -32020."""
    rid = envelope.id
    version = headers.get("mcp-protocol-version")
    if envelope.kind == "response":
        if version is None:
            raise _mismatch("MCP-Protocol-Version header is required", rid)
        return
    meta_version = envelope.meta.get(META_VERSION)
    if not isinstance(envelope.params.get("_meta"), dict) or not isinstance(meta_version, str):
        raise JsonRpcError(JsonRpcError.INVALID_PARAMS,
                           f"Invalid params: params._meta must carry {META_VERSION}",
                           http_status=400, request_id=rid)
    if version is None:
        raise _mismatch("MCP-Protocol-Version header is required", rid)
    if meta_version != version:
        raise _mismatch("MCP-Protocol-Version header does not match _meta protocolVersion", rid)
    method = headers.get("mcp-method")
    if method is None:
        raise _mismatch("Mcp-Method header is required", rid)
    if decode_header_value(method) != envelope.method:
        raise _mismatch("Mcp-Method header does not match the request body", rid)
    name = envelope.name
    if envelope.method in ("tools/call", "resources/read", "prompts/get"):
        raw = headers.get("mcp-name")
        if raw is None:
            raise _mismatch("Mcp-Name header is required for this method", rid)
        if decode_header_value(raw) != name:
            raise _mismatch("Mcp-Name header does not match the request body", rid)


def _mismatch(message: str, request_id: object) -> JsonRpcError:
    return JsonRpcError(JsonRpcError.HEADER_MISMATCH, message, http_status=400,
                        request_id=request_id)


def check_message_kind(era: Era, envelope: Envelope) -> None:
    """What a client may send without an ``id``: the notifications its era defines, and (in the
    2025-11-25 era, where servers send requests) responses. Anything else is refused: nothing
    would answer it, so nothing would show that an upstream ran it."""
    if envelope.kind == "notification":
        assert envelope.method is not None
        if not client_notification_allowed(era.value, envelope.method):
            raise JsonRpcError(
                JsonRpcError.INVALID_REQUEST,
                f"Invalid Request: {envelope.method[:100]!r} is not a notification a client "
                f"may send; a request needs an id", http_status=400)
    elif envelope.kind == "response" and era is Era.MODERN:
        raise JsonRpcError(
            JsonRpcError.INVALID_REQUEST,
            "Invalid Request: in 2026-07-28 servers send no requests, so clients send no "
            "responses", http_status=400, request_id=envelope.id)
