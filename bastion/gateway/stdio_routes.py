"""Who a message on a shared stdio channel belongs to.

A child process has one stdout for every exchange in flight, so the gateway gives each
request a child-side id of its own (and each progress token a child-side token of its own),
keeps the caller's originals, and maps every answer back. Client-chosen ids and tokens never
reach the child, so two callers that pick the same ones never see each other's messages; a
cancellation names a request only if the caller who sends it made that request.

Pure bookkeeping: no I/O. Each exchange has an inbox the child's reader fills.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from bastion.gateway.upstream import Caller

__all__ = ["MAX_QUEUED_NOTIFICATIONS", "Exchange", "Routes", "cancelled"]

SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
# Notifications kept for one exchange whose client reads slowly; past this, they are dropped
# (the answer itself never is).
MAX_QUEUED_NOTIFICATIONS = 1024


def _plain_id(value: object) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


@dataclass(eq=False)
class Exchange:
    """One request in flight on a child, as the caller knows it and as the child knows it."""

    caller: Caller
    original_id: Any
    child_id: int
    method: str | None = None
    original_token: Any = None  # the caller's progress token, if it asked for progress
    answered: bool = False
    inbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)

    def deliver(self, message: dict[str, Any]) -> None:
        if "method" in message and self.inbox.qsize() >= MAX_QUEUED_NOTIFICATIONS:
            return
        self.inbox.put_nowait(message)


class Routes:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._by_child: dict[int, Exchange] = {}
        self._by_token: dict[int, Exchange] = {}

    def __len__(self) -> int:
        return len(self._by_child)

    def exchanges(self) -> list[Exchange]:
        return list(self._by_child.values())

    def open(self, caller: Caller, message: dict[str, Any]) -> tuple[Exchange, dict[str, Any]]:
        """Register a request; return it with the message to write to the child."""
        child_id = next(self._ids)
        method = message.get("method")
        exchange = Exchange(caller, message.get("id"), child_id,
                            method if isinstance(method, str) else None)
        out = {**message, "id": child_id}
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(params, dict) and isinstance(meta, dict) and "progressToken" in meta:
            meta = dict(meta)
            token = meta.pop("progressToken")
            if _plain_id(token):
                exchange.original_token = token
                meta["progressToken"] = child_id
                self._by_token[child_id] = exchange
            out["params"] = {**params, "_meta": meta}
        self._by_child[child_id] = exchange
        return exchange, out

    def close(self, exchange: Exchange) -> None:
        self._by_child.pop(exchange.child_id, None)
        self._by_token.pop(exchange.child_id, None)

    def inbound(self, message: dict[str, Any]) -> Exchange | None:
        """The exchange a message from the child belongs to, with the message rewritten in
        place to the caller's ids; None when it names no exchange in flight."""
        method = message.get("method")
        if method is None:
            exchange = self._child(message.get("id"))
            if exchange is None:
                return None
            message["id"] = exchange.original_id
            exchange.answered = True
            result = message.get("result")
            if isinstance(result, dict):
                self._subscription_back(result, exchange)
            return exchange
        if "id" in message:
            return None  # a request from the child: the caller decides (see StdioChild)
        params = message.get("params")
        if not isinstance(params, dict):
            return None
        if method == "notifications/progress":
            token = params.get("progressToken")
            exchange = self._by_token.get(token) if isinstance(token, int) else None
            if exchange is None:
                return None
            params["progressToken"] = exchange.original_token
            return exchange
        if method == "notifications/cancelled":
            # A server ends a subscription stream by cancelling its listen request.
            exchange = self._child(params.get("requestId"))
            if exchange is not None:
                params["requestId"] = exchange.original_id
                self._subscription_back(params, exchange)
            return exchange
        meta = params.get("_meta")
        if isinstance(meta, dict):
            exchange = self._child(meta.get(SUBSCRIPTION_ID))
            if exchange is not None:
                self._subscription_back(params, exchange)
            return exchange
        return None

    def cancellation(self, caller: Caller, message: dict[str, Any]) -> list[dict[str, Any]]:
        """What a caller's ``notifications/cancelled`` becomes on the child: one per request in
        flight of that caller with that id (normally one), none for anyone else's."""
        params = message.get("params")
        if not isinstance(params, dict) or not _plain_id(params.get("requestId")):
            return []
        wanted = params["requestId"]
        out = []
        for exchange in self._by_child.values():
            if (exchange.caller == caller and not exchange.answered
                    and type(exchange.original_id) is type(wanted)
                    and exchange.original_id == wanted):
                out.append(cancelled(exchange.child_id, params.get("reason")))
        return out

    def _child(self, value: object) -> Exchange | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return self._by_child.get(value)
        return None

    @staticmethod
    def _subscription_back(holder: dict[str, Any], exchange: Exchange) -> None:
        meta = holder.get("_meta")
        if isinstance(meta, dict) and meta.get(SUBSCRIPTION_ID) == exchange.child_id:
            holder["_meta"] = {**meta, SUBSCRIPTION_ID: exchange.original_id}


def cancelled(child_id: int, reason: object = None) -> dict[str, Any]:
    params: dict[str, Any] = {"requestId": child_id}
    if isinstance(reason, str):
        params["reason"] = reason[:200]
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
