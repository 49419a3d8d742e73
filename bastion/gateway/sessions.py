"""Legacy-era (2025-11-25 and earlier) sessions minted by the gateway (TS-05..TS-09).

A gateway session id is random (256 bits, visible ASCII), bound to the principal that created
it, and mapped to the upstream's session id, which never reaches the client. Holding an id is
never authentication: the bearer token is verified on every request before the lookup.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.gateway.upstream import ANONYMOUS

__all__ = ["ANONYMOUS", "RedisSessions", "Session", "SessionRegistry", "SessionStore",
           "new_session_id"]


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    id: str
    mount: str
    binding: tuple[str, str, str]
    upstream_id: str | None
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore(Protocol):
    async def mint(self, mount: str, binding: tuple[str, str, str],
                   upstream_id: str | None) -> Session: ...

    async def lookup(self, session_id: str, mount: str,
                     binding: tuple[str, str, str]) -> Session | None: ...

    async def remove(self, session_id: str) -> None: ...


def _same_binding(a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
    return secrets.compare_digest("\x00".join(a).encode(), "\x00".join(b).encode())


class SessionRegistry:
    """In-process registry with idle expiry and a size bound (one replica)."""

    def __init__(self, *, idle_seconds: float = 3600.0, max_sessions: int = 10_000) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    async def mint(self, mount: str, binding: tuple[str, str, str],
                   upstream_id: str | None) -> Session:
        self._expire()
        session = Session(new_session_id(), mount, binding, upstream_id)
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    async def lookup(self, session_id: str, mount: str,
                     binding: tuple[str, str, str]) -> Session | None:
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
        if session.mount != mount or not _same_binding(session.binding, binding):
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    async def remove(self, session_id: str) -> None:
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


class RedisSessions:
    """Sessions shared by every replica through Redis, with sliding idle expiry.

    Keys are a hash of the session id, so a Redis dump does not hand out usable ids.
    """

    def __init__(self, client: Any, *, idle_seconds: int = 3600,
                 prefix: str = "bastion:session:") -> None:
        self.client = client
        self.idle_seconds = idle_seconds
        self.prefix = prefix

    def _key(self, session_id: str) -> str:
        import hashlib

        return self.prefix + hashlib.sha256(session_id.encode()).hexdigest()

    async def mint(self, mount: str, binding: tuple[str, str, str],
                   upstream_id: str | None) -> Session:
        session = Session(new_session_id(), mount, binding, upstream_id)
        value = json.dumps({"mount": mount, "binding": list(binding), "upstream": upstream_id})
        await self.client.set(self._key(session.id), value, ex=self.idle_seconds)
        return session

    async def lookup(self, session_id: str, mount: str,
                     binding: tuple[str, str, str]) -> Session | None:
        key = self._key(session_id)
        raw = await self.client.getex(key, ex=self.idle_seconds)
        if raw is None:
            return None
        data = json.loads(raw)
        stored = (data["binding"][0], data["binding"][1], data["binding"][2])
        if data["mount"] != mount or not _same_binding(stored, binding):
            return None
        return Session(session_id, mount, stored, data["upstream"])

    async def remove(self, session_id: str) -> None:
        await self.client.delete(self._key(session_id))
