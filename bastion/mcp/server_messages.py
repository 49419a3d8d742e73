"""What an upstream server sends back, read strictly. Pure.

An upstream is not trusted: what the gateway must understand to enforce a rule (the answer to a
list request, a request the server makes of the client, an ``InputRequiredResult``) is parsed
exactly, and what cannot be parsed is refused, never passed on unread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InputRequest",
    "UnreadableMessage",
    "input_requests",
    "may_name_method",
    "may_require_input",
    "parse_message",
    "same_id",
]


class UnreadableMessage(ValueError):
    """A message from the upstream that is not one JSON-RPC object in UTF-8."""


def parse_message(payload: bytes) -> dict[str, Any]:
    """One JSON-RPC message: a JSON object (a batch, trailing bytes, invalid UTF-8 or a
    nesting too deep to parse all raise ``UnreadableMessage``)."""
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UnreadableMessage(f"not a JSON message ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise UnreadableMessage("not a JSON-RPC object (a batch or a bare value)")
    return message


def same_id(a: object, b: object) -> bool:
    """JSON-RPC ids are equal only with the same type: ``"1"`` is not ``1``, ``1.0`` is not
    ``1`` and ``true`` is not ``1``."""
    return type(a) is type(b) and a == b


def may_name_method(payload: bytes) -> bool:
    """Whether a message may carry a ``method`` member (a request or a notification), decided
    without parsing: a JSON key spells ``method`` either literally or through ``\\u``
    escapes (no other escape gives a letter). False means it certainly does not."""
    return b'"method"' in payload or b"\\u" in payload


def may_require_input(payload: bytes) -> bool:
    """Whether a result may be an ``InputRequiredResult``, decided without parsing (as
    ``may_name_method``)."""
    return b'"input_required"' in payload or b"\\u" in payload


@dataclass(frozen=True, slots=True)
class InputRequest:
    """One entry of an ``InputRequiredResult``'s ``inputRequests`` (2026-07-28 MRTR)."""

    key: str
    method: str
    params: Mapping[str, Any]


def input_requests(message: Mapping[str, Any]) -> list[InputRequest] | None:
    """The input requests of an ``InputRequiredResult`` answer; None when ``message`` is not
    one. Raises ``UnreadableMessage`` for one whose requests are malformed."""
    result = message.get("result")
    if not isinstance(result, dict) or result.get("resultType") != "input_required":
        return None
    raw = result.get("inputRequests", {})
    if not isinstance(raw, dict):
        raise UnreadableMessage("inputRequests is not an object")
    out = []
    for key, request in raw.items():
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise UnreadableMessage("an input request has no method")
        params = request.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise UnreadableMessage("an input request's params is not an object")
        out.append(InputRequest(key, request["method"], params))
    return out
