"""Reading the log back: every writer's chain merged in time order, as JSONL.

Merging keeps each writer's records in seq order (a k-way merge on time, which never reorders
within one input), so each chain still verifies in the merged stream even when clocks disagree.
Checkpoint lines follow the record they sign. ``since`` cuts each chain at its first record at
or after that time and keeps it contiguous from there: the slice verifies with
``verify(..., partial=True)``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from bastion.audit.checkpoint import Checkpoint
from bastion.audit.model import format_time, parse_time
from bastion.audit.rfc8785 import canonicalize_text
from bastion.audit.sinks.base import AuditSink

__all__ = ["export_lines", "load", "merge_by_time", "normalise_since", "tail"]


def normalise_since(text: str) -> str:
    """Any RFC 3339 time (or a date) in the fixed form records carry, for text comparison."""
    return format_time(parse_time(text))


def merge_by_time(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    chains: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        chains.setdefault(str(r.get("writer")), []).append(r)
    streams = [sorted(chain, key=lambda r: r.get("seq") or 0)
               for _, chain in sorted(chains.items())]
    return list(heapq.merge(*streams, key=lambda r: (str(r.get("time", "")), str(r.get("writer")))))


def export_lines(
    records: Iterable[Mapping[str, Any]], checkpoints: Iterable[Checkpoint]
) -> Iterator[str]:
    """Canonical JSON lines (no newline): records in time order, each checkpoint after the
    record it signs (checkpoints of records not exported come last)."""
    signs: dict[tuple[str, int], list[Checkpoint]] = {}
    for cp in checkpoints:
        signs.setdefault((cp.writer, cp.seq), []).append(cp)
    for record in merge_by_time(records):
        yield canonicalize_text(record)
        for cp in signs.pop((str(record.get("writer")), int(record.get("seq") or 0)), []):
            yield canonicalize_text(cp.to_json())
    for rest in signs.values():
        for cp in rest:
            yield canonicalize_text(cp.to_json())


async def load(
    sink: AuditSink, *, since: str | None = None, writer: str | None = None
) -> tuple[list[dict[str, Any]], list[Checkpoint]]:
    """Records (by writer, then seq) and the checkpoints that bear on them."""
    records = await sink.read(writer=writer, since=since)
    checkpoints = await sink.checkpoints(writer=writer)
    if since is not None:
        first: dict[str, int] = {}
        for r in records:
            first.setdefault(r["writer"], r["seq"])
        checkpoints = [c for c in checkpoints if c.writer in first and c.seq >= first[c.writer]]
    return records, checkpoints


async def tail(sink: AuditSink, count: int, *, after: Mapping[str, int] | None = None
               ) -> list[Mapping[str, Any]]:
    """The last ``count`` records across writers in time order; with ``after`` (seq by writer),
    only records past those seqs."""
    picked: list[dict[str, Any]] = []
    for writer in await sink.writers():
        if after is not None:
            start = after.get(writer, 0)
        else:
            start = max(0, (await sink.head(writer)).seq - count)
        picked.extend(await sink.read(writer=writer, after_seq=start))
    merged = merge_by_time(picked)
    return merged if after is not None else merged[-count:]

