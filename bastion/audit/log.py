"""``AuditLog``: the processors, the chain, group commit into a sink, signed checkpoints.

``await log.append(event)`` returns once the record is durable in the sink (and the mirror, if
any). Appends that arrive while a batch is being committed wait for the next batch, which takes
all of them at once: under load many records share one fsync or COMMIT, and an idle log still
commits a lone record at once (no timer to wait for).

Modes: ``fail-closed`` (default) raises ``AuditUnavailable`` from ``append`` when the record
could not be written, so the caller refuses the request; ``best-effort`` logs the failure
(kind and correlation id, never the record) and returns.

Checkpoints are signed inside the batch that reaches ``checkpoint_every`` records since the last
one, or ``checkpoint_seconds`` after it (a timer signs an idle chain's unsigned tail), and on
``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bastion.audit.chain import ChainHead, check_writer_id, seal_all, stored_line
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.errors import AuditUnavailable
from bastion.audit.keys import AuditSigner
from bastion.audit.model import AuditEvent, format_time
from bastion.audit.redact import DEFAULT_PROCESSORS, Processor
from bastion.audit.sinks.base import AuditSink, SealedBatch
from bastion.audit.sinks.jsonl import JsonlSink

__all__ = [
    "AUDIT_DB_NAME",
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_SECONDS",
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

logger = logging.getLogger("bastion.audit")


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in ("fail-closed", "best-effort"):
            raise ValueError(f"audit mode {mode!r}: expected fail-closed or best-effort")
        if checkpoint_every < 1 or checkpoint_seconds <= 0 or max_batch < 1:
            raise ValueError("checkpoint_every, checkpoint_seconds and max_batch must be > 0")
        self.sink, self.mirror, self.signer = sink, mirror, signer
        self.writer = check_writer_id(writer)
        self.mode: AuditMode = mode
        self.processors = tuple(processors)
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.max_batch = max_batch
        self._clock = clock
        self._opened_at = clock()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._commit_lock = asyncio.Lock()  # one batch at a time, timer and close() included
        self._closing = False
        self._closed = False
        self._force_checkpoint = False
        self._unsigned_since: float | None = None  # when the oldest unsigned record was written
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
        self._pending.append((body, future))
        self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._run(), name="bastion-audit-flusher")
        try:
            # shielded: a caller that gives up does not take the record out of the batch
            await asyncio.shield(future)
        except AuditUnavailable as exc:
            self._fail(event, exc.description)

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

    async def _commit(self, bodies: list[dict[str, Any]]) -> SealedBatch:
        async with self._commit_lock:
            return await self._commit_locked(bodies)

    async def _commit_locked(self, bodies: list[dict[str, Any]]) -> SealedBatch:
        where = self.sink.description
        try:
            batch = await self.sink.append_batch(self.writer, bodies, self._seal)
            if self.mirror is not None:
                where = self.mirror.description
                await self._mirror(batch)
        except Exception as exc:
            logger.error("audit: writing %d record(s) to %s failed: %s: %s",
                         len(bodies), where, type(exc).__name__, exc)
            raise AuditUnavailable(f"{where}: {type(exc).__name__}: {exc}") from exc
        self._force_checkpoint = False
        if batch.checkpoint is not None:
            self._unsigned_since = None
        elif batch.sealed and self._unsigned_since is None:
            self._unsigned_since = self._clock()
        return batch

    async def _mirror(self, batch: SealedBatch) -> None:
        assert self.mirror is not None
        checkpoints = [batch.checkpoint] if batch.checkpoint else []
        if not batch.sealed and not checkpoints:
            return
        gap = await self.mirror.append_sealed(self.writer, batch.sealed, checkpoints)
        if gap is not None:
            # the mirror missed records (a crash between the two writes, or another process
            # sharing this writer): copy them from the store, then the batch
            missing = await self.sink.read(writer=self.writer, after_seq=gap)
            signed = await self.sink.checkpoints(writer=self.writer)
            gap = await self.mirror.append_sealed(
                self.writer, [stored_line(r) for r in missing], signed)
            if gap is not None:
                raise OSError(f"the mirror {self.mirror.description} cannot catch up")

    def _timeout(self) -> float | None:
        if self._unsigned_since is None:
            return None
        return max(0.0, self._unsigned_since + self.checkpoint_seconds - self._clock())

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._timeout())
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            if not batch and self._unsigned_since is None:
                continue
            try:
                done = await self._commit([body for body, _ in batch])
            except AuditUnavailable as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not batch:
                    await asyncio.sleep(min(self.checkpoint_seconds, 1.0))  # timer retry
                continue
            except BaseException as exc:  # cancelled: nobody may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(AuditUnavailable(f"{type(exc).__name__}"))
                raise
            self.batches += 1
            self.records += len(done.sealed)
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if index in done.rejected:
                    future.set_exception(AuditUnavailable(
                        f"the event is not JSON data: {done.rejected[index]}"))
                else:
                    future.set_result(None)


async def open_sink(
    *, data_dir: Path | None = None, db: Path | None = None, url: str | None = None,
    jsonl: Path | None = None,
) -> AuditSink:
    """The sink a location names: a PostgreSQL URL, a SQLite file, a JSONL file, or the default
    ``<data_dir>/audit.db``."""
    chosen = [x for x in (db, url, jsonl) if x is not None]
    if len(chosen) > 1:
        raise ValueError("name one audit store: a database file, a PostgreSQL URL or a JSONL file")
    if url is not None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the audit store URL must be postgresql://")
        from bastion.audit.sinks.postgres import PostgresAuditSink  # asyncpg only when used

        return await PostgresAuditSink.open(url)
    if jsonl is not None:
        return await JsonlSink.open(jsonl)
    from bastion.audit.sinks.sqlite import SqliteAuditSink

    if db is None:
        if data_dir is None:
            raise ValueError("no audit store named (a data folder, database, URL or JSONL file)")
        db = data_dir / AUDIT_DB_NAME
    return await SqliteAuditSink.open(db)


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
    announce: bool = True,
) -> AuditLog:
    """Open the audit log of a deployment.

    Records go to PostgreSQL when ``storage_url`` is a ``postgresql://`` URL (tables in its
    ``?schema=``), else to ``<data_dir>/audit.db``; ``jsonl`` adds a mirror file. Checkpoints
    are signed with the key in ``<data_dir>/audit-keys/`` (created on first use). ``writer``
    defaults to the host name. ``announce`` writes an ``audit.opened`` record (pid, writer), so
    every start shows in the chain. Raises ``AuditUnavailable`` if the store cannot be opened,
    in either mode: a deployment does not start without its audit trail.
    """
    try:
        signer = signer or AuditSigner.load_or_create(data_dir)
        url = storage_url if storage_url and storage_url.startswith(
            ("postgresql://", "postgres://")) else None
        sink = await open_sink(data_dir=data_dir, url=url)
        mirror = await JsonlSink.open(jsonl) if jsonl is not None else None
    except Exception as exc:
        raise AuditUnavailable(f"cannot open the audit store: {type(exc).__name__}: {exc}") from exc
    log = AuditLog(sink, signer, writer=writer or default_writer_id(), mode=mode,
                   processors=tuple(processors), mirror=mirror,
                   checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    if announce:
        await log.append(AuditEvent("audit.opened", extra={"pid": os.getpid()}))
    return log
