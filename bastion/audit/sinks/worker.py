"""One thread per sink that runs its blocking calls (SQLite, fsync) in order.

``asyncio.to_thread`` goes through the default executor: a context copy, a
``concurrent.futures`` future chained to an asyncio one, and a pool that may hand the work to
any of its threads. A sink needs none of that: its calls are serialised anyway (one connection,
one file), so a single long-lived thread fed by a queue does the same job for less, and the
results come back with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SinkWorker", "finish_worker", "start_worker"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class SinkWorker:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the sink's thread and return its result (or raise its exception).
        A caller that is cancelled does not take the call back: it runs to its end."""
        if self._stopped:
            raise RuntimeError("the sink's worker thread has stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return await future

    async def stop(self) -> None:
        """Let queued calls finish, then end the thread."""
        if self._stopped:
            return
        self._stopped = True
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, future, loop = job
            try:
                result = fn()
            except BaseException as exc:  # handed to the caller, whatever it is
                _deliver(loop, future, None, exc)
            else:
                _deliver(loop, future, result, None)


async def start_worker(name: str, first: Callable[[], Any]) -> SinkWorker:
    """A sink's worker whose first call, ``first`` (opening the store), has succeeded; if it
    fails, the thread is stopped again and the error raised."""
    worker = SinkWorker(name)
    try:
        await worker.call(first)
    except BaseException:
        await worker.stop()
        raise
    return worker


async def finish_worker(worker: SinkWorker | None, last: Callable[[], None]) -> None:
    """Run ``last`` (closing the store) on ``worker`` and stop it; with no worker, here."""
    if worker is None:
        last()
        return
    try:
        await worker.call(last)
    finally:
        await worker.stop()


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any,
             exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(settle)
