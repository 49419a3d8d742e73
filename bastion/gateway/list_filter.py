"""One definition, two uses: list results show only what the principal may call. Pure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "LIST_METHODS",
    "SseEventSplitter",
    "Visible",
    "filter_list_result",
    "rewrite_response_message",
    "rewrite_sse_event",
]

# list method -> (result key, call method, item field naming the target)
LIST_METHODS: dict[str, tuple[str, str, str]] = {
    "tools/list": ("tools", "tools/call", "name"),
    "prompts/list": ("prompts", "prompts/get", "name"),
    "resources/list": ("resources", "resources/read", "uri"),
    "resources/templates/list": ("resourceTemplates", "resources/read", "uriTemplate"),
}

Visible = Callable[[str, str], bool]  # (call method, name) -> may the principal use it


def filter_list_result(list_method: str, result: dict[str, Any], visible: Visible) -> None:
    key, call_method, field = LIST_METHODS[list_method]
    items = result.get(key)
    if not isinstance(items, list):
        return
    result[key] = [
        item for item in items
        if isinstance(item, dict) and isinstance(item.get(field), str)
        and visible(call_method, item[field])
    ]


def rewrite_response_message(
    data: bytes, request_id: object, list_method: str, visible: Visible
) -> bytes | None:
    """If ``data`` is the JSON-RPC response to ``request_id``, return it filtered."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("id") != request_id:
        return None
    result = message.get("result")
    if not isinstance(result, dict):
        return None
    filter_list_result(list_method, result, visible)
    return json.dumps(message, separators=(",", ":")).encode()


class SseEventSplitter:
    """Splits a byte stream of Server-Sent Events into whole events (blank-line separated)."""

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._buf = b""
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        while True:
            idx = self._buf.find(b"\n\n")
            if idx < 0:
                break
            events.append(self._buf[: idx + 2])
            self._buf = self._buf[idx + 2 :]
        if len(self._buf) > self.max_event_bytes:
            raise ValueError("server-sent event too large")
        return events

    def rest(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest


def rewrite_sse_event(
    event: bytes, request_id: object, list_method: str, visible: Visible
) -> bytes:
    lines = event.rstrip(b"\n").split(b"\n")
    data_lines = [ln[5:].lstrip(b" ") if ln.startswith(b"data:") else None for ln in lines]
    payload = b"\n".join(d for d in data_lines if d is not None)
    if not payload:
        return event
    new = rewrite_response_message(payload, request_id, list_method, visible)
    if new is None:
        return event
    out = [ln for ln in lines if not ln.startswith(b"data:")]
    out.append(b"data: " + new)
    return b"\n".join(out) + b"\n\n"
