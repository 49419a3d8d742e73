"""TS-10: SSE event ids are tagged with the gateway session they belong to.

Upstream servers may keep one event store for all sessions; a ``Last-Event-ID`` taken from
another session's stream would then replay that stream. The gateway prefixes every event id it
relays with a tag derived from the session, and refuses a ``Last-Event-ID`` without this
session's tag, so replay never crosses sessions whatever the upstream does. Pure.
"""

from __future__ import annotations

import hashlib

from bastion.mcp.sse import SseEvent

__all__ = ["session_tag", "tag_event", "untag"]


def session_tag(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).hexdigest()[:16].encode()


def untag(last_event_id: str, tag: bytes) -> str | None:
    """The upstream's event id, or None when the id does not belong to this session."""
    prefix = tag.decode() + "."
    if not last_event_id.startswith(prefix):
        return None
    return last_event_id[len(prefix):]


def tag_event(event: SseEvent, tag: bytes) -> SseEvent:
    """The event with its (non-empty) ``id`` prefixed by the session's tag."""
    prefix = tag + b"."
    return SseEvent([(name, prefix + value) if name == b"id" and value else (name, value)
                     for name, value in event.lines])
