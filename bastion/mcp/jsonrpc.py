"""The JSON-RPC 2.0 envelope of an MCP message, parsed once per request."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bastion.errors import JsonRpcError

__all__ = ["Envelope", "error_body", "parse_envelope", "required_name_param"]

MAX_DEPTH = 64

# The parameter that names the target of a method (Mcp-Name, policy, per-name scopes).
_NAME_PARAM = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}


# Methods whose target must be present (they carry Mcp-Name in 2026-07-28). The subscribe pair
# is looked up when present but not required: 2026-07-28 removed it, and the upstream answers.
_NAME_REQUIRED = frozenset({"tools/call", "prompts/get", "resources/read"})


def required_name_param(method: str) -> str | None:
    """The parameter that must name the method's target (``name`` or ``uri``), for the methods
    that carry Mcp-Name in 2026-07-28; None for the others."""
    return _NAME_PARAM.get(method) if method in _NAME_REQUIRED else None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One client-to-server JSON-RPC message: request, notification or response."""

    kind: str  # "request" | "notification" | "response"
    method: str | None
    id: str | int | None
    params: dict[str, Any]
    message: dict[str, Any]

    @property
    def name(self) -> str | None:
        """Tool or prompt name, or resource URI, for the methods that have one."""
        key = _NAME_PARAM.get(self.method or "")
        value = self.params.get(key) if key else None
        return value if isinstance(value, str) else None

    @property
    def arguments(self) -> dict[str, Any]:
        args = self.params.get("arguments")
        return args if isinstance(args, dict) else {}

    @property
    def meta(self) -> dict[str, Any]:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else {}


def _too_deep(value: object, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


# A JSON escape of a UTF-16 surrogate (\uD800-\uDFFF): a pair is one character, a lone one
# decodes to a string that is not Unicode text (it cannot be encoded, logged or forwarded).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def parse_envelope(body: bytes) -> Envelope:
    """Parse and validate one JSON-RPC message; errors carry the right JSON-RPC code.

    The body must be UTF-8 (RFC 8259 §8.1): ``json.loads`` on bytes would also take UTF-16 and
    UTF-32, and UTF-8-encoded surrogates, which would then be forwarded as they came.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRpcError(JsonRpcError.PARSE_ERROR, "Parse error: body is not valid UTF-8",
                           http_status=400) from exc
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JsonRpcError(JsonRpcError.PARSE_ERROR, "Parse error: body is not JSON",
                           http_status=400) from exc
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(data):
        raise JsonRpcError(JsonRpcError.PARSE_ERROR,
                           "Parse error: a string holds a lone UTF-16 surrogate",
                           http_status=400)
    if isinstance(data, list):
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                           "Invalid Request: JSON-RPC batches are not supported", http_status=400)
    if not isinstance(data, dict):
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                           "Invalid Request: expected a JSON-RPC object", http_status=400)
    # every array or object opens with a bracket, so a body with at most MAX_DEPTH of them
    # (as text, strings included) cannot nest deeper: the walk is only for the others
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _too_deep(data):
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST, "Invalid Request: nesting too deep",
                           http_status=400)
    req_id = data.get("id")
    if data.get("jsonrpc") != "2.0":
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST, 'Invalid Request: jsonrpc must be "2.0"',
                           http_status=400, request_id=_safe_id(req_id))
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, str | int)):
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                           "Invalid Request: id must be a string or an integer", http_status=400)
    method = data.get("method")
    if method is None:
        if "result" in data or "error" in data:
            if req_id is None:
                raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                                   "Invalid Request: a response needs an id", http_status=400)
            return Envelope("response", None, req_id, {}, data)
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST, "Invalid Request: no method",
                           http_status=400, request_id=req_id)
    if not isinstance(method, str) or not method or len(method) > 256:
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST,
                           "Invalid Request: method must be a non-empty string",
                           http_status=400, request_id=req_id)
    params = data.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise JsonRpcError(JsonRpcError.INVALID_PARAMS, "Invalid params: params must be an object",
                           http_status=400, request_id=req_id)
    key = required_name_param(method)
    if key is not None and not isinstance(params.get(key), str):
        raise JsonRpcError(JsonRpcError.INVALID_PARAMS, f"Invalid params: {key} must be a string",
                           http_status=400, request_id=req_id)
    if method == "tools/call" and "arguments" in params and not isinstance(
        params["arguments"], dict | None
    ):
        raise JsonRpcError(JsonRpcError.INVALID_PARAMS,
                           "Invalid params: arguments must be an object",
                           http_status=400, request_id=req_id)
    kind = "notification" if "id" not in data else "request"
    if kind == "request" and req_id is None:
        raise JsonRpcError(JsonRpcError.INVALID_REQUEST, "Invalid Request: id must not be null",
                           http_status=400)
    return Envelope(kind, method, req_id, params, data)


def _safe_id(value: object) -> str | int | None:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def error_body(code: int, message: str, request_id: object = None, data: object = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return json.dumps(
        {"jsonrpc": "2.0", "id": _safe_id(request_id), "error": err}, separators=(",", ":")
    ).encode()
