"""TS-10: SSE event ids are tagged with the gateway session they belong to.

Upstream servers may keep one event store for all sessions; a ``Last-Event-ID`` taken from
another session's stream would then replay that stream. The gateway prefixes every event id it
relays with a tag derived from the session, and refuses a ``Last-Event-ID`` without this
session's tag, so replay never crosses sessions whatever the upstream does. Pure.
"""

from __future__ import annotations

import hashlib

__all__ = ["EventIdTagger", "session_tag", "untag"]


def session_tag(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).hexdigest()[:16].encode()


def untag(last_event_id: str, tag: bytes) -> str | None:
    """The upstream's event id, or None when the id does not belong to this session."""
    prefix = tag.decode() + "."
    if not last_event_id.startswith(prefix):
        return None
    return last_event_id[len(prefix):]


class EventIdTagger:
    """Rewrites ``id:`` lines of an SSE byte stream, across chunk boundaries."""

    def __init__(self, tag: bytes) -> None:
        self.prefix = b"id: " + tag + b"."
        self._partial = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._partial + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut < 0:
            self._partial = data
            return b""
        complete, self._partial = data[: cut + 1], data[cut + 1 :]
        if b"id:" not in complete:
            return complete
        lines = complete.splitlines(keepends=True)
        out = []
        for line in lines:
            if line.startswith(b"id:"):
                value = line[3:].lstrip(b" ")
                body = value.rstrip(b"\r\n")
                ending = value[len(body):]
                out.append(self.prefix + body + ending if body else line)
            else:
                out.append(line)
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._partial = self._partial, b""
        return self.feed(rest + b"\n")[:-1] if rest else b""
