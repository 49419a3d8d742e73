"""What an audit sink does. Chaining happens *inside* the sink's write transaction: the sink
reads its writer's head from the store under the write lock and hands it to ``seal`` (a pure
function from the log), so two processes sharing a writer id, or a process restarted after a
crash, always continue the chain the store actually holds.

A batch waits for the store's write lock (SQLite's, the JSONL file's ``flock``, the writer's
advisory lock or a table lock in PostgreSQL) at most ``wait`` seconds, then raises
``AuditStoreBusy``: a store held by someone else refuses requests within a bounded time instead
of holding each of them for as long as the lock is held."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion.audit.chain import ChainHead, SealedRecord
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.model import parse_time

__all__ = ["DEFAULT_WRITE_TIMEOUT", "WAIT_SLACK", "AuditSink", "SealedBatch", "Sealer"]

# How long a batch waits for the store (its write lock, or a PostgreSQL server that does not
# answer) before its records are refused: long enough for any commit the store makes in
# normal use (milliseconds), short enough that a client is refused long before it gives up.
DEFAULT_WRITE_TIMEOUT = 2.0
# A sink keeps the lock wait it has set while a batch's wait is at most this much shorter, so
# that the common case (a record that waited a few milliseconds for the batch before it) sets
# nothing; a record may thus wait up to this much past its time.
WAIT_SLACK = 0.1


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """What one batch writes. ``rejected``: indexes of bodies that could not be sealed (not
    JSON data), with why; they are not in the chain and their appends fail."""

    sealed: list[SealedRecord]
    checkpoint: Checkpoint | None
    rejected: Mapping[int, str] = field(default_factory=dict)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [s.record for s in self.sealed]

    def head_after(self, head: ChainHead) -> ChainHead:
        """The chain's head once this batch is written on top of ``head``."""
        seq, digest = head.seq, head.hash
        if self.sealed:
            last = self.sealed[-1].record
            seq, digest = int(last["seq"]), str(last["hash"])
        checkpoint_seq, checkpoint_time = head.checkpoint_seq, head.checkpoint_time
        if self.checkpoint is not None:
            checkpoint_seq = self.checkpoint.seq
            checkpoint_time = parse_time(self.checkpoint.time)
        return ChainHead(head.writer, seq, digest, checkpoint_seq, checkpoint_time)


Sealer = Callable[[ChainHead, Sequence[Mapping[str, Any]]], SealedBatch]


class AuditSink(Protocol):
    """An append-only home for records and checkpoints. ``commits`` counts write transactions
    (one per batch: the group-commit measure)."""

    description: str
    commits: int

    async def append_batch(
        self, writer: str, bodies: Sequence[Mapping[str, Any]], seal: Sealer, *,
        wait: float | None = None,
    ) -> SealedBatch:
        """In one durable transaction: read the head, seal, write records and checkpoint.
        Wait at most ``wait`` seconds (default: the sink's ``write_timeout``) for the store's
        write lock, else raise ``AuditStoreBusy``."""
        ...

    async def head(self, writer: str) -> ChainHead: ...

    async def read(
        self, *, writer: str | None = None, after_seq: int = 0, since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records ordered by writer, then seq. ``since``: from each writer's first record at
        or after that time (RFC 3339 as records store it), contiguous from there on."""
        ...

    async def checkpoints(self, *, writer: str | None = None) -> list[Checkpoint]: ...

    async def writers(self) -> list[str]: ...

    async def close(self) -> None: ...
