"""One definition, two uses: list results show only what the principal may call. Pure.

Fails closed: an answer the filter cannot read exactly (not one JSON object, another id — ``"1"``
is not ``1`` —, a result that is not an object, an item list that is not a list) raises
``UnfilterableAnswer`` and the proxy refuses it; it is never passed on unfiltered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bastion.mcp.server_messages import UnreadableMessage, same_id

__all__ = [
    "LIST_METHODS",
    "UnfilterableAnswer",
    "Visible",
    "filter_list_response",
    "filter_list_result",
]

# list method -> (result key, call method, item field naming the target)
LIST_METHODS: dict[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "tools/call", "name"),
    "prompts/list": ("prompts", "prompts/get", "name"),
    "resources/list": ("resources", "resources/read", "uri"),
    "resources/templates/list": ("resourceTemplates", "resources/read", "uriTemplate"),
}

Visible = Callable[[str, str], bool]  # (call method, name) -> may the principal use it


class UnfilterableAnswer(UnreadableMessage):
    """A list answer the filter cannot read exactly."""


def filter_list_result(list_method: str, result: dict[str, Any], visible: Visible) -> None:
    key, call_method, field = LIST_METHODS[list_method]
    if key not in result:
        return
    items = result[key]
    if not isinstance(items, list):
        raise UnfilterableAnswer(f"result.{key} is not a list")
    result[key] = [
        item for item in items
        if isinstance(item, dict) and isinstance(item.get(field), str)
        and visible(call_method, item[field])
    ]


def filter_list_response(
    message: dict[str, Any], request_id: object, list_method: str, visible: Visible
) -> bytes:
    """``message`` (an upstream message without ``method``) must be the answer to
    ``request_id``: returned filtered, re-encoded (so what the client parses is what the
    filter read, duplicate keys and all)."""
    if not same_id(message.get("id"), request_id):
        raise UnfilterableAnswer("the answer carries another id than the request")
    if "error" in message and "result" not in message:
        return json.dumps(message, separators=(",", ":")).encode()
    result = message.get("result")
    if not isinstance(result, dict) or "error" in message:
        raise UnfilterableAnswer("the answer has no result object")
    filter_list_result(list_method, result, visible)
    return json.dumps(message, separators=(",", ":")).encode()
