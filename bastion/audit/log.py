"""``AuditLog``: the processors, the chain, group commit into a sink, signed checkpoints.

``await log.append(event)`` returns once the record is durable in the sink (and the mirror, if
any). Appends that arrive while a batch is being committed wait for the next batch, which takes
all of them at once: under load many records share one fsync or COMMIT, and an idle log still
commits a lone record at once (no timer to wait for).

Modes: ``fail-closed`` (default) raises ``AuditUnavailable`` from ``append`` when the record
could not be written, so the caller refuses the request; ``best-effort`` logs the failure
(kind and correlation id, never the record) and returns.

``log.record(event)`` queues a record nobody waits for (the upstream outcome of a call whose
answer has already gone out): it is written with the next batch, or ``linger`` seconds later
at the latest, so a call costs one commit, not two. A record queued this way that cannot be
written is logged as lost (kind and correlation id), in either mode: there is nothing left to
refuse. On ``close()`` every queued record is written.

Bounded waits: an ``append`` waits at most ``write_timeout`` seconds (default 2) for the store,
counted from the call: a batch is given what is left of its oldest waiter's time for the store's
write lock (a sink may round that up by ``WAIT_SLACK``, 0.1 s), so a record queued behind a
batch that is itself stuck on a lock does not wait twice. A store locked by someone else (or a
PostgreSQL server that does not answer) thus refuses requests within that bound, with one log
line naming the store and what held it.

Checkpoints are signed inside the batch that reaches ``checkpoint_every`` records since the last
one, or ``checkpoint_seconds`` after it (a timer signs an idle chain's unsigned tail), and on
``close()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bastion.audit.chain import ChainHead, check_writer_id, seal_all, stored_line
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.errors import AuditStoreBusy, AuditUnavailable
from bastion.audit.keys import AuditSigner
from bastion.audit.model import AuditEvent, format_time
from bastion.audit.private import warn_if_shared
from bastion.audit.redact import DEFAULT_PROCESSORS, Processor
from bastion.audit.sinks.base import DEFAULT_WRITE_TIMEOUT, AuditSink, SealedBatch, Sealer
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.verify import decisions_without_outcome

__all__ = [
    "AUDIT_DB_NAME",
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_SECONDS",
    "DEFAULT_WRITE_TIMEOUT",
    "AuditLog",
    "AuditMode",
    "default_writer_id",
    "open_audit_log",
    "open_sink",
]

AuditMode = Literal["fail-closed", "best-effort"]
AUDIT_DB_NAME = "audit.db"
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_SECONDS = 60.0
DEFAULT_MAX_BATCH = 1000
DEFAULT_LINGER = 0.05
PREVIOUS_RUN_SCAN = 1000  # how many of the chain's last records a start looks at
PREVIOUS_RUN_SEQS = 100   # how many seqs of decisions without outcome audit.opened names

logger = logging.getLogger("bastion.audit")

# A queued record: its body, the future its writer waits on, and the time (on the log's
# clock) by which it must be written or refused (infinite for ``record``: nobody waits).
_Entry = tuple[dict[str, Any], asyncio.Future[None], float]


def default_writer_id() -> str:
    """The host name, made a valid writer id: replicas on different hosts keep apart chains."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return (name.strip("-.") or "bastion")[:128]


class AuditLog:
    def __init__(
        self,
        sink: AuditSink,
        signer: AuditSigner,
        *,
        writer: str,
        mode: AuditMode = "fail-closed",
        processors: Sequence[Processor] = DEFAULT_PROCESSORS,
        mirror: JsonlSink | None = None,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        max_batch: int = DEFAULT_MAX_BATCH,
        linger: float = DEFAULT_LINGER,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in ("fail-closed", "best-effort"):
            raise ValueError(f"audit mode {mode!r}: expected fail-closed or best-effort")
        if (checkpoint_every < 1 or checkpoint_seconds <= 0 or max_batch < 1 or linger <= 0
                or not write_timeout > 0):
            raise ValueError("checkpoint_every, checkpoint_seconds, max_batch, linger and "
                             "write_timeout must be > 0")
        self.sink, self.mirror, self.signer = sink, mirror, signer
        self.writer = check_writer_id(writer)
        self.mode: AuditMode = mode
        self.processors = tuple(processors)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        self.linger = linger
        self.write_timeout = write_timeout
        self._clock = clock
        self._opened_at = clock()
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._flush_now = False  # a waiter, the linger timer or close() wants a batch now
        self._linger_timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()  # one batch at a time, timer and close() included
        self._closing = False
        self._closed = False
        self._force_checkpoint = False
        self._unsigned_since: float | None = None  # when the oldest unsigned record was written
        self._head: ChainHead | None = None  # where the last written batch left the chain
        self.batches = 0
        self.records = 0

    # --- the API -----------------------------------------------------------------------------

    async def append(self, event: AuditEvent) -> None:
        """Write one record; return once it is durable. See the module text for the modes."""
        if self._closing:
            self._fail(event, "the audit log is closed")
            return
        try:
            body = self._process(event)
        except Exception as exc:
            self._fail(event, f"the event could not be encoded: {exc}")
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((body, future, self._clock() + self.write_timeout))
        self._want_batch()
        try:
            # A caller that gives up cancels only its future: the record stays in its batch.
            await future
        except AuditUnavailable as exc:
            self._fail(event, exc.description)

    def record(self, event: AuditEvent) -> None:
        """Queue a record without waiting for it: see the module text."""
        if self._closing:
            self._lost(event.kind, event.correlation_id, "the audit log is closed")
            return
        try:
            body = self._process(event)
        except Exception as exc:
            self._lost(event.kind, event.correlation_id, f"the event could not be encoded: {exc}")
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        kind, correlation_id = event.kind, event.correlation_id

        def written(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is not None:
                self._lost(kind, correlation_id, str(f.exception()))

        future.add_done_callback(written)
        self._pending.append((body, future, math.inf))
        if self._linger_timer is None:
            self._linger_timer = loop.call_later(self.linger, self._linger_due)
        self._start_flusher()

    def _linger_due(self) -> None:
        self._linger_timer = None
        if self._pending:
            self._want_batch()

    def _want_batch(self) -> None:
        """A batch is wanted now: wake the flusher (started on first use)."""
        self._flush_now = True
        self._wake.set()
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._run(), name="bastion-audit-flusher")

    @staticmethod
    def _lost(kind: str, correlation_id: str | None, why: str) -> None:
        logger.error("audit record lost: kind=%s correlation_id=%s: %s",
                     kind, correlation_id, why)

    async def checkpoint(self) -> None:
        """Sign the head now (if anything is unsigned) and wait until it is written."""
        self._force_checkpoint = True
        await self._commit([])

    async def close(self) -> None:
        """Write what is pending, sign the head, close the sinks."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._flusher is not None:
            await self._flusher
        try:
            self._force_checkpoint = True
            await self._commit([])
        except AuditUnavailable as exc:
            logger.error("audit: final checkpoint not written: %s", exc.description)
        finally:
            self._closed = True
            await self.sink.close()
            if self.mirror is not None:
                await self.mirror.close()

    async def __aenter__(self) -> AuditLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- inside ------------------------------------------------------------------------------

    def _process(self, event: AuditEvent) -> dict[str, Any]:
        body = event.to_body(self._clock())
        for processor in self.processors:
            body = processor(body)
        return body

    def _fail(self, event: AuditEvent, why: str) -> None:
        if self.mode == "fail-closed":
            raise AuditUnavailable(why)
        logger.warning("audit record lost (best-effort mode): kind=%s correlation_id=%s: %s",
                       event.kind, event.correlation_id, why)

    def _seal(self, head: ChainHead, bodies: Sequence[Mapping[str, Any]]) -> SealedBatch:
        """Pure but for the clock; runs inside the sink's write transaction."""
        if head.checkpoint_seq > head.seq:
            raise RuntimeError(
                f"the audit store holds a checkpoint at seq {head.checkpoint_seq} for writer "
                f"{head.writer} but its records end at seq {head.seq}: it was truncated; run "
                "`bastion audit verify`")
        sealed, rejected, new_head = seal_all(head, bodies)
        now = self._clock()
        unsigned = new_head.seq - head.checkpoint_seq
        last_signed = head.checkpoint_time if head.checkpoint_time is not None else self._opened_at
        due = unsigned > 0 and (
            self._force_checkpoint or unsigned >= self.checkpoint_every
            or now - last_signed >= self.checkpoint_seconds)
        checkpoint: Checkpoint | None = (
            self.signer.sign(new_head, format_time(now)) if due else None)
        return SealedBatch(sealed, checkpoint, rejected)

    async def _commit(self, bodies: list[dict[str, Any]],
                      deadline: float = math.inf) -> SealedBatch:
        """Write one batch; ``deadline``: its oldest waiter's (see ``_Entry``)."""
        async with self._commit_lock:
            return await self._commit_locked(bodies, deadline)

    def _sealer(self, bodies: list[dict[str, Any]]) -> tuple[Sealer, list[ChainHead]]:
        """The sink's seal function for ``bodies``, and the heads it was handed.

        The batch is sealed here, against the head the last batch left, so the sink only
        compares heads (under its write lock) and writes: the hashing and canonicalising stay
        on the event loop's thread instead of contending with it for the GIL. If the store's
        head is not the expected one (another process shares the writer id), the sink seals
        again against the head it read: the chain is always the store's."""
        expected = self._head
        presealed: SealedBatch | None = None
        if expected is not None:
            try:
                presealed = self._seal(expected, bodies)
            except RuntimeError:
                presealed = None
        used: list[ChainHead] = []

        def seal(head: ChainHead, items: Sequence[Mapping[str, Any]]) -> SealedBatch:
            used.append(head)
            if presealed is not None and head == expected and items is bodies:
                return presealed
            return self._seal(head, items)

        return seal, used

    def _written(self, used: list[ChainHead], batch: SealedBatch) -> None:
        self._force_checkpoint = False
        if used:
            self._head = batch.head_after(used[-1])
        if batch.checkpoint is not None:
            self._unsigned_since = None
        elif batch.sealed and self._unsigned_since is None:
            self._unsigned_since = self._clock()
        elif not batch.sealed and self._unsigned_since is not None:
            # an empty batch that signed nothing (another process sharing the writer id
            # signed lately): look again a full interval from now, not at once
            self._unsigned_since = self._clock()

    def _unavailable(self, count: int, where: str, exc: Exception) -> AuditUnavailable:
        if isinstance(exc, AuditStoreBusy):
            logger.error("audit: %d record(s) not written: %s; the requests waiting for them "
                         "are refused (503)", count, exc)
            return AuditUnavailable(str(exc))
        logger.error("audit: writing %d record(s) to %s failed: %s: %s",
                     count, where, type(exc).__name__, exc)
        return AuditUnavailable(f"{where}: {type(exc).__name__}: {exc}")

    async def _commit_locked(self, bodies: list[dict[str, Any]],
                             deadline: float) -> SealedBatch:
        where = self.sink.description
        seal, used = self._sealer(bodies)
        self._head = None  # unknown until this batch is known to be written
        # what is left of the oldest waiter's time (None: nobody waits, the sink's own limit)
        wait = None if deadline == math.inf else min(
            self.write_timeout, max(0.0, deadline - self._clock()))
        try:
            batch = await self.sink.append_batch(self.writer, bodies, seal, wait=wait)
            if self.mirror is not None:
                where = self.mirror.description
                left = None if wait is None else max(0.0, deadline - self._clock())
                await self._mirror(batch, left)
        except Exception as exc:
            raise self._unavailable(len(bodies), where, exc) from exc
        self._written(used, batch)
        return batch

    def _settle(self, batch: list[_Entry], done: SealedBatch) -> None:
        self.batches += 1
        self.records += len(done.sealed)
        for index, (_, future, _) in enumerate(batch):
            if future.done():
                continue
            if index in done.rejected:
                future.set_exception(AuditUnavailable(
                    f"the event is not JSON data: {done.rejected[index]}"))
            else:
                future.set_result(None)

    @staticmethod
    def _refuse(batch: list[_Entry], exc: BaseException) -> None:
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(exc)

    def _take(self) -> list[_Entry]:
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    async def _mirror(self, batch: SealedBatch, wait: float | None) -> None:
        assert self.mirror is not None
        checkpoints = [batch.checkpoint] if batch.checkpoint else []
        if not batch.sealed and not checkpoints:
            return
        gap = await self.mirror.append_sealed(self.writer, batch.sealed, checkpoints,
                                              wait=wait)
        if gap is not None:
            # the mirror missed records (a crash between the two writes, or another process
            # sharing this writer): copy them from the store, then the batch
            missing = await self.sink.read(writer=self.writer, after_seq=gap)
            signed = await self.sink.checkpoints(writer=self.writer)
            gap = await self.mirror.append_sealed(
                self.writer, [stored_line(r) for r in missing], signed, wait=wait)
            if gap is not None:
                raise OSError(f"the mirror {self.mirror.description} cannot catch up")

    def _checkpoint_due(self) -> bool:
        timeout = self._timeout()
        return timeout is not None and timeout <= 0

    def _timeout(self) -> float | None:
        if self._unsigned_since is None:
            return None
        return max(0.0, self._unsigned_since + self.checkpoint_seconds - self._clock())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._closing and not self._pending:
                return
            if not (self._flush_now or self._closing):
                # Sleep until a waiter or the linger timer wants a batch, or the unsigned tail
                # is due for its checkpoint. A timer, not wait_for (a task per wait).
                self._wake.clear()
                timeout = self._timeout()
                timer = loop.call_later(timeout, self._wake.set) if timeout is not None else None
                await self._wake.wait()
                if timer is not None:
                    timer.cancel()
                if not (self._flush_now or self._closing or self._checkpoint_due()):
                    continue
            self._flush_now = False
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None
            batch = self._take()
            if self._pending:
                self._flush_now = True  # more than one batch's worth: the next one at once
            if not batch and self._unsigned_since is None:
                continue
            try:
                done = await self._commit([body for body, _, _ in batch],
                                          min((d for _, _, d in batch), default=math.inf))
            except AuditUnavailable as exc:
                self._refuse(batch, exc)
                if not batch:
                    await asyncio.sleep(min(self.checkpoint_seconds, 1.0))  # timer retry
                continue
            except BaseException as exc:  # cancelled: nobody may wait forever
                self._refuse(batch, AuditUnavailable(f"{type(exc).__name__}"))
                raise
            self._settle(batch, done)


async def open_sink(
    *, data_dir: Path | None = None, db: Path | None = None, url: str | None = None,
    jsonl: Path | None = None, write_timeout: float = DEFAULT_WRITE_TIMEOUT,
) -> AuditSink:
    """The sink a location names: a PostgreSQL URL, a SQLite file, a JSONL file, or the default
    ``<data_dir>/audit.db``. ``write_timeout``: the longest a batch waits for the store."""
    chosen = [x for x in (db, url, jsonl) if x is not None]
    if len(chosen) > 1:
        raise ValueError("name one audit store: a database file, a PostgreSQL URL or a JSONL file")
    if url is not None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the audit store URL must be postgresql://")
        from bastion.audit.sinks.postgres import PostgresAuditSink  # asyncpg only when used

        return await PostgresAuditSink.open(url, write_timeout=write_timeout)
    if jsonl is not None:
        return await JsonlSink.open(jsonl, write_timeout=write_timeout)
    from bastion.audit.sinks.sqlite import SqliteAuditSink

    if db is None:
        if data_dir is None:
            raise ValueError("no audit store named (a data folder, database, URL or JSONL file)")
        db = data_dir / AUDIT_DB_NAME
    return await SqliteAuditSink.open(db, write_timeout=write_timeout)


async def open_audit_log(
    data_dir: Path,
    *,
    storage_url: str | None = None,
    writer: str | None = None,
    mode: AuditMode = "fail-closed",
    jsonl: Path | None = None,
    signer: AuditSigner | None = None,
    processors: Iterable[Processor] = DEFAULT_PROCESSORS,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT,
    announce: bool = True,
) -> AuditLog:
    """Open the audit log of a deployment.

    Records go to PostgreSQL when ``storage_url`` is a ``postgresql://`` URL (tables in its
    ``?schema=``), else to ``<data_dir>/audit.db``; ``jsonl`` adds a mirror file. Checkpoints
    are signed with the key in ``<data_dir>/audit-keys/`` (created on first use). ``writer``
    defaults to the host name. ``write_timeout``: the longest an append waits for the store
    (its write lock, or a PostgreSQL server that does not answer) before it is refused.
    ``announce`` writes an ``audit.opened`` record (pid, writer), so every start shows in the
    chain, with what the writer's chain says of the previous run (``extra.previous``: its last
    seq, how far it was signed, and the allowed calls among its last ``PREVIOUS_RUN_SCAN``
    records that have no outcome record: a run killed before it wrote them). Raises
    ``AuditUnavailable`` if the store cannot be opened, in either mode: a deployment does not
    start without its audit trail.
    """
    try:
        signer = signer or AuditSigner.load_or_create(data_dir)
        url = storage_url if storage_url and storage_url.startswith(
            ("postgresql://", "postgres://")) else None
        sink = await open_sink(data_dir=data_dir, url=url, write_timeout=write_timeout)
        mirror = (await JsonlSink.open(jsonl, write_timeout=write_timeout)
                  if jsonl is not None else None)
    except Exception as exc:
        raise AuditUnavailable(f"cannot open the audit store: {type(exc).__name__}: {exc}") from exc
    for path in _files_of(sink, mirror, signer):
        warn_if_shared(path)
    log = AuditLog(sink, signer, writer=writer or default_writer_id(), mode=mode,
                   processors=tuple(processors), mirror=mirror,
                   checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
                   write_timeout=write_timeout)
    if announce:
        extra: dict[str, Any] = {"pid": os.getpid()}
        try:
            previous = await _previous_run(sink, log.writer)
        except Exception as exc:
            await log.close()
            raise AuditUnavailable(
                f"cannot read the audit store: {type(exc).__name__}: {exc}") from exc
        if previous:
            extra["previous"] = previous
        await log.append(AuditEvent("audit.opened", extra=extra))
    return log


async def _previous_run(sink: AuditSink, writer: str) -> dict[str, Any]:
    """What the writer's chain shows of the run before this one; logged if it ended without
    closing its log (unsigned records, or allowed calls whose outcome it never wrote)."""
    head = await sink.head(writer)
    if head.seq == 0:
        return {}
    tail = await sink.read(writer=writer, after_seq=max(0, head.seq - PREVIOUS_RUN_SCAN))
    unanswered = decisions_without_outcome(tail)
    previous: dict[str, Any] = {"last_seq": head.seq, "signed_through": head.checkpoint_seq}
    if unanswered:
        previous["without_outcome"] = len(unanswered)
        previous["without_outcome_seqs"] = [m.seq for m in unanswered[:PREVIOUS_RUN_SEQS]]
    found: list[str] = []
    if head.checkpoint_seq < head.seq:
        found.append(f"its records after seq {head.checkpoint_seq} unsigned (it did not close "
                     "its log: a crash, or kill -9)")
    if unanswered:
        seqs = ", ".join(str(m.seq) for m in unanswered[:10])
        more = ", ..." if len(unanswered) > 10 else ""
        found.append(f"{len(unanswered)} allowed call(s) among its last {len(tail)} records "
                     f"without an outcome record (seq {seqs}{more})")
    if found:
        logger.warning("audit: the previous run of writer %s left %s; `bastion audit verify` "
                       "lists what is missing", writer, " and ".join(found))
    return previous


def _files_of(sink: AuditSink, mirror: JsonlSink | None, signer: AuditSigner) -> list[Path]:
    """The files (and the key folder) of an open audit log, for the check that others cannot
    read them."""
    paths: list[Path] = []
    path = getattr(sink, "path", None)  # SQLite and JSONL; PostgreSQL has none
    if isinstance(path, Path):
        paths.append(path)
        if not isinstance(sink, JsonlSink):  # SQLite, with its WAL files
            paths.extend(path.with_name(path.name + end) for end in ("-wal", "-shm"))
    if mirror is not None:
        paths.append(mirror.path)
    if signer.directory is not None:
        paths.append(signer.directory)
        paths.extend(sorted(signer.directory.glob("*.json")))
    return paths
