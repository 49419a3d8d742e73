"""Which messages each side may send, per protocol era (the schemas' ClientNotification and
ServerRequest unions). Pure data.

A client message without an ``id`` is a notification: nothing answers it, so an upstream that
took one for a call would run it unseen. Only the notifications the protocol defines for
clients pass the gateway; anything else without an ``id`` is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CLIENT_NOTIFICATIONS",
    "SERVER_REQUESTS",
    "client_notification_allowed",
]

# schema/2025-11-25/schema.ts ClientNotification (and the earlier versions, a subset of it)
_LEGACY_CLIENT_NOTIFICATIONS = frozenset({
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
    "notifications/tasks/status",
})
# schema/2026-07-28/schema.ts ClientNotification = CancelledNotification
_MODERN_CLIENT_NOTIFICATIONS = frozenset({"notifications/cancelled"})

CLIENT_NOTIFICATIONS: Mapping[str, frozenset[str]] = {
    "legacy": _LEGACY_CLIENT_NOTIFICATIONS,
    "modern": _MODERN_CLIENT_NOTIFICATIONS,
}

# schema/2025-11-25/schema.ts ServerRequest: what an upstream may ask of the client (2026-07-28
# has none: a server asks through an InputRequiredResult's inputRequests instead).
SERVER_REQUESTS = frozenset({
    "ping",
    "sampling/createMessage",
    "roots/list",
    "elicitation/create",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
})


def client_notification_allowed(era: str, method: str) -> bool:
    """Whether ``method`` is a notification a client may send in ``era`` ("legacy"/"modern")."""
    return method in CLIENT_NOTIFICATIONS.get(era, frozenset())
