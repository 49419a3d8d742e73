"""The hash chain: pure functions over plain dicts.

A record is the event body plus five members:

``v``       record format version (1)
``writer``  the id of the chain (one per replica or process group)
``seq``     1, 2, 3, ... within the writer's chain
``prev``    the ``hash`` of the writer's previous record (64 zeros before the first)
``hash``    hex SHA-256 over the RFC 8785 form of the record without ``hash``

So an edit changes a hash, a deletion or insertion breaks ``seq`` and ``prev``, and a rewrite
that recomputes every later hash is caught by the signed checkpoints (``checkpoint.py``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.audit.rfc8785 import canonicalize, canonicalize_text

__all__ = [
    "CHAIN_FIELDS",
    "GENESIS_HASH",
    "RECORD_VERSION",
    "ChainHead",
    "SealedRecord",
    "check_writer_id",
    "record_hash",
    "seal",
    "seal_all",
    "stored_line",
]

RECORD_VERSION = 1
GENESIS_HASH = "0" * 64
CHAIN_FIELDS = ("v", "writer", "seq", "prev", "hash")
_WRITER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")


def check_writer_id(writer: str) -> str:
    if not isinstance(writer, str) or not _WRITER_ID.fullmatch(writer):
        raise ValueError(
            f"audit writer id {writer!r}: expected 1-128 characters of A-Z a-z 0-9 . _ : @ -"
        )
    return writer


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a writer's chain ends: ``seq`` 0 and the genesis hash when it is empty.

    ``checkpoint_seq`` and ``checkpoint_time`` (epoch seconds) tell when the chain was last
    signed, so the log can decide whether the next batch needs a checkpoint."""

    writer: str
    seq: int = 0
    hash: str = GENESIS_HASH
    checkpoint_seq: int = 0
    checkpoint_time: float | None = None


def record_hash(record: Mapping[str, Any]) -> str:
    unsigned = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonicalize(unsigned)).hexdigest()


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """``line``: how the record is stored: its canonical form without ``hash`` (the bytes that
    were hashed) with ``"hash"`` appended as the last member. Plain JSON that parses back to
    ``record``; canonical up to where the hash was added."""

    record: dict[str, Any]
    line: str


def seal(head: ChainHead, body: Mapping[str, Any]) -> SealedRecord:
    """The next record of ``head``'s chain, holding ``body``. Raises CanonicalizationError
    (a ValueError) when the body is not JSON data."""
    clash = [name for name in CHAIN_FIELDS if name in body]
    if clash:
        raise ValueError(f"an audit body may not set {', '.join(clash)}")
    record: dict[str, Any] = {
        "v": RECORD_VERSION, "writer": head.writer, "seq": head.seq + 1, "prev": head.hash,
        **body,
    }
    text = canonicalize_text(record)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    record["hash"] = digest
    return SealedRecord(record, f'{text[:-1]},"hash":"{digest}"}}')


def stored_line(record: Mapping[str, Any]) -> SealedRecord:
    """The stored form of a record read back (its hash kept as it is, not recomputed)."""
    unsigned = {k: v for k, v in record.items() if k != "hash"}
    text = canonicalize_text(unsigned)
    return SealedRecord(dict(record), f'{text[:-1]},"hash":{canonicalize_text(record["hash"])}}}')


def seal_all(
    head: ChainHead, bodies: Sequence[Mapping[str, Any]]
) -> tuple[list[SealedRecord], dict[int, str], ChainHead]:
    """Seal bodies in order. A body that cannot be sealed is left out of the chain and named
    in the second result (index -> why), so one bad event does not sink its batch."""
    sealed: list[SealedRecord] = []
    rejected: dict[int, str] = {}
    for index, body in enumerate(bodies):
        try:
            item = seal(head, body)
        except ValueError as exc:
            rejected[index] = str(exc)
            continue
        sealed.append(item)
        head = ChainHead(head.writer, item.record["seq"], item.record["hash"],
                         head.checkpoint_seq, head.checkpoint_time)
    return sealed, rejected, head
