"""Legacy-era (2025-11-25 and earlier) sessions minted by the gateway (TS-05..TS-09).

A gateway session id is random (256 bits, visible ASCII), bound to the principal that created
it, and mapped to the upstream's session id, which never reaches the client. Holding an id is
never authentication: the bearer token is verified on every request before the lookup.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["Session", "SessionRegistry", "new_session_id"]

ANONYMOUS = ("", "", "")


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    id: str
    mount: str
    binding: tuple[str, str, str]
    upstream_id: str | None
    last_seen: float = field(default_factory=time.monotonic)


class SessionRegistry:
    """In-process registry with idle expiry and a size bound."""

    def __init__(self, *, idle_seconds: float = 3600.0, max_sessions: int = 10_000) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def mint(self, mount: str, binding: tuple[str, str, str], upstream_id: str | None) -> Session:
        self._expire()
        session = Session(new_session_id(), mount, binding, upstream_id)
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def lookup(self, session_id: str, mount: str, binding: tuple[str, str, str]) -> Session | None:
        """The session if it exists, belongs to this mount and to this principal; else None.

        Another principal's token with a valid id gets the same answer as an unknown id
        (404), so ids cannot be probed.
        """
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > self.idle_seconds:
            del self._sessions[session_id]
            return None
        if session.mount != mount or not secrets.compare_digest(
            "\x00".join(session.binding), "\x00".join(binding)
        ):
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def sessions_for_mount(self, mount: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.mount == mount]

    def _expire(self) -> None:
        now = time.monotonic()
        while self._sessions:
            oldest = next(iter(self._sessions.values()))
            if now - oldest.last_seen <= self.idle_seconds:
                break
            self._sessions.popitem(last=False)
