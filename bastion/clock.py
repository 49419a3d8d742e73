"""Time, injected: anything compared with "now" takes a ``Clock``."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FixedClock", "OffsetClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock for tests: it moves only when told to."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += seconds


class OffsetClock:
    """The system clock moved by ``offset`` seconds; for tests in which time passes at once
    (``advance``) while real servers run on real time."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
