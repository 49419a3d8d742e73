"""The stdio children of one mount: whom each serves, caps, and idleness.

Each child sits in a slot that names its owner (the caller it serves; None for the one child
shared by every caller when isolation is "shared"). A caller at its own cap, or a mount at its
global cap, is refused with a clear error; nobody's child is ever evicted to make room. A slot
with no exchange or stream open for ``idle_timeout`` seconds is taken out to be closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from bastion.gateway.stdio_child import StdioChild
from bastion.gateway.upstream import Caller

__all__ = ["CapReached", "ChildPool", "Slot"]


class CapReached(Exception):
    """No child may be started for this caller now; ``status`` is 429 (the caller's own cap)
    or 503 (the mount's)."""

    def __init__(self, status: int, setting: str, limit: int, message: str) -> None:
        super().__init__(message)
        self.status, self.setting, self.limit, self.message = status, setting, limit, message


@dataclass(eq=False)
class Slot:
    key: Hashable
    owner: Caller | None  # None: shared by every caller
    last_used: float
    child: StdioChild | None = None
    busy: int = 0  # exchanges and streams open on it
    closed: bool = False
    failure: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def serves(self, caller: Caller) -> bool:
        return self.owner is None or self.owner == caller


class ChildPool:
    def __init__(self, mount: str, *, per_owner: int, total: int,
                 clock: Callable[[], float]) -> None:
        self.mount = mount
        self.per_owner = per_owner
        self.total = total
        self.clock = clock
        self._slots: dict[Hashable, Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: Hashable) -> Slot | None:
        return self._slots.get(key)

    def slots(self) -> list[Slot]:
        return list(self._slots.values())

    def owned_by(self, owner: Caller) -> int:
        return sum(1 for s in self._slots.values() if s.owner == owner)

    def reserve(self, key: Hashable, owner: Caller | None) -> Slot:
        """A new slot (its child not started yet), counted against the caps at once.

        Synchronous, so that no two requests can both take the last place."""
        assert key not in self._slots
        if owner is not None and self.owned_by(owner) >= self.per_owner:
            raise CapReached(
                429, "max_children_per_principal", self.per_owner,
                f"Too many MCP server processes for this principal on mount {self.mount}: "
                f"the limit is max_children_per_principal = {self.per_owner}. End a session "
                "(DELETE) or wait for an idle one to be closed.")
        if len(self._slots) >= self.total:
            raise CapReached(
                503, "max_children", self.total,
                f"Mount {self.mount} runs as many MCP server processes as it may: the limit is "
                f"max_children = {self.total}. Try again later.")
        slot = Slot(key, owner, self.clock())
        self._slots[key] = slot
        return slot

    def discard(self, slot: Slot, failure: str = "") -> None:
        slot.closed = True
        slot.failure = slot.failure or failure
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

    def enter(self, slot: Slot) -> None:
        slot.busy += 1
        slot.last_used = self.clock()

    def leave(self, slot: Slot) -> None:
        slot.busy = max(0, slot.busy - 1)
        slot.last_used = self.clock()

    def take_idle(self, idle_timeout: float) -> list[Slot]:
        """Take out the slots nobody has used for ``idle_timeout`` seconds, and the ones whose
        child is gone; the caller closes their children."""
        now = self.clock()
        out = [s for s in self._slots.values() if s.busy == 0 and (
            now - s.last_used >= idle_timeout or (s.child is not None and not s.child.alive))]
        for s in out:
            self.discard(s)
        return out

    def take_all(self) -> list[Slot]:
        out = list(self._slots.values())
        for s in out:
            self.discard(s)
        return out

    def take_dead(self) -> list[Slot]:
        """Take out the slots whose child is gone (they count against no cap any more)."""
        return self.take_idle(float("inf"))
