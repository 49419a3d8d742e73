"""Expired state of the authorization server (codes, pending requests, sessions, token rows,
grants with no token left) is deleted on a schedule, on every kind of store.

``ExpiredStatePurge`` runs ``Store.purge_expired`` once when the server starts and then every
``interval`` seconds, reading "now" from the server's clock. A failed purge is logged and
tried again at the next interval: the server keeps serving, and nothing expired is ever
*used* meanwhile, since every read checks expiry itself. ``stop()`` ends it at shutdown,
before the store closes. With several replicas each one purges; the deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bastion.clock import Clock
from bastion.storage.base import Store, StoreError

__all__ = ["ExpiredStatePurge"]

log = logging.getLogger("bastion.server.purge")


class ExpiredStatePurge:
    def __init__(self, store: Store, clock: Clock, interval: float, *,
                 wait: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if interval <= 0:
            raise ValueError("the purge interval must be positive")
        self.store, self.clock, self.interval = store, clock, interval
        self._wait = wait  # injected by tests, which decide when an interval has passed
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> int | None:
        """One purge; the number of rows deleted, or None when it failed (logged)."""
        try:
            deleted = await self.store.purge_expired(self.clock.now())
        except StoreError as exc:
            self.failures += 1
            log.error("purging expired authorization state failed, next try in %gs: %s",
                      self.interval, exc)
            return None
        except Exception:
            self.failures += 1
            log.exception("purging expired authorization state failed, next try in %gs",
                          self.interval)
            return None
        finally:
            self.runs += 1
        if deleted:
            log.info("purged %d expired rows of authorization state", deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            await self.run_once()
            await self._wait(self.interval)

    async def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="bastion-purge-expired")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
