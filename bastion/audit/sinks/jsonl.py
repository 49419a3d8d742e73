"""JSONL audit file: one record per line in RFC 8785 form (the bytes that were hashed),
checkpoints as lines of their own (``{"checkpoint": "<JWS>", ...}``) right after the record
they sign. Usable as the only sink, or as a mirror of the store (``AuditLog(mirror=...)``).

Several processes may append to one file: every batch is written under an exclusive ``flock``
with ``O_APPEND`` and fsync'd before the batch is acknowledged. Each process remembers how far it
has read and reads what others appended before it writes, so it always knows every writer's
head. A line without its newline at the end of the file can only be left by a writer that died
mid-write (writes happen under the lock), before it acknowledged anything: the next writer cuts
it off, and readers ignore it with a warning.

A batch waits at most its ``wait`` for the ``flock`` (another process holding it stays
holding it), then fails with ``AuditStoreBusy``. The file is created 0600 (its folder 0700 if
made here).

Writes run on the sink's own thread (``SinkWorker``, as the SQLite sink's), in order; reads
(``export``, ``verify``) parse the whole file and run in the default executor instead, so a
long read never holds up the writes requests wait for.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bastion.audit.chain import ChainHead, SealedRecord
from bastion.audit.checkpoint import Checkpoint, CheckpointInvalid
from bastion.audit.errors import AuditStoreBusy
from bastion.audit.model import parse_time
from bastion.audit.private import FILE_MODE, create_private_file
from bastion.audit.rfc8785 import canonicalize_text
from bastion.audit.sinks.base import DEFAULT_WRITE_TIMEOUT, SealedBatch, Sealer
from bastion.audit.sinks.worker import SinkWorker, finish_worker, start_worker

__all__ = ["JsonlContents", "JsonlSink", "parse_jsonl"]

T = TypeVar("T")
_LOCK_POLL_MAX = 0.02  # the longest pause between two tries for a contended flock


@dataclass(slots=True)
class JsonlContents:
    records: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def parse_jsonl(lines: Iterable[str], *, final_newline: bool = True) -> JsonlContents:
    """Split JSONL text into records and checkpoints. ``final_newline`` False: the last line
    was not terminated (a write cut short); it is left out with a warning."""
    out = JsonlContents()
    items = list(lines)
    if items and not final_newline:
        out.warnings.append(f"line {len(items)}: incomplete last line ignored "
                            "(a write cut short; it was never acknowledged)")
        items = items[:-1]
    for number, line in enumerate(items, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            out.bad_lines.append((number, f"not JSON: {exc}"))
            continue
        if not isinstance(data, dict):
            out.bad_lines.append((number, "not a JSON object"))
        elif "checkpoint" in data:
            try:
                out.checkpoints.append(Checkpoint.from_json(data))
            except CheckpointInvalid as exc:
                out.bad_lines.append((number, str(exc)))
        else:
            out.records.append(data)
    return out


class JsonlSink:
    def __init__(self, path: Path, *, write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> None:
        if not write_timeout > 0:
            raise ValueError("write_timeout must be > 0")
        self.path = path
        self.description = f"jsonl:{path}"
        self.commits = 0
        self.write_timeout = write_timeout
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._offset = 0
        self._heads: dict[str, ChainHead] = {}
        self._worker: SinkWorker | None = None

    @classmethod
    async def open(cls, path: Path, *,
                   write_timeout: float = DEFAULT_WRITE_TIMEOUT) -> JsonlSink:
        sink = cls(path, write_timeout=write_timeout)
        sink._worker = await start_worker(f"bastion-audit-jsonl:{path.name}", sink._open_sync)
        return sink

    def _open_sync(self) -> None:
        created = create_private_file(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if created:
            _fsync_dir(self.path.parent)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

        worker, self._worker = self._worker, None
        await finish_worker(worker, close)

    async def _locked(self, fn: Callable[[int], T], wait: float | None = None) -> T:
        def call() -> T:
            with self._lock:
                fd = self._fd
                if fd is None:
                    raise OSError("the audit file is closed")
                self._flock(fd, self.write_timeout if wait is None else wait)
                try:
                    self._catch_up(fd)
                    return fn(fd)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)

        if self._worker is None:
            raise OSError("the audit file is closed")
        return await self._worker.call(call)

    def _flock(self, fd: int, wait: float) -> None:
        """Take the file's exclusive lock, waiting at most ``wait`` seconds (``flock`` itself
        would wait as long as the holder keeps it)."""
        started = time.monotonic()
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = started + wait - time.monotonic()
                if left <= 0:
                    raise AuditStoreBusy(
                        self.description, time.monotonic() - started,
                        "the file's lock stayed held by another process") from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, _LOCK_POLL_MAX)

    def _catch_up(self, fd: int) -> None:
        """Read what was appended since we last looked; cut off a torn last line."""
        size = os.fstat(fd).st_size
        if size < self._offset:  # the file was cut shorter behind our back: read it all again
            self._offset, self._heads = 0, {}
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        end = data.rfind(b"\n") + 1
        if end < len(data):
            os.ftruncate(fd, self._offset + end)
            os.fsync(fd)
        for line in data[:end].splitlines():
            self._note(line)
        self._offset += end

    def _note(self, line: bytes) -> None:
        try:
            data = json.loads(line)
        except ValueError:
            return
        if not isinstance(data, dict) or not isinstance(data.get("writer"), str):
            return
        writer = data["writer"]
        head = self._heads.get(writer, ChainHead(writer))
        seq = data.get("seq")
        if type(seq) is not int:
            return
        if "checkpoint" in data:
            if seq >= head.checkpoint_seq and isinstance(data.get("time"), str):
                try:
                    when: float | None = parse_time(data["time"])
                except ValueError:
                    when = None
                self._heads[writer] = ChainHead(writer, head.seq, head.hash, seq, when)
        elif seq > head.seq and isinstance(data.get("hash"), str):
            self._heads[writer] = ChainHead(writer, seq, data["hash"], head.checkpoint_seq,
                                            head.checkpoint_time)

    def _write(self, fd: int, lines: Sequence[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        for line in data.splitlines():
            self._note(line)
        self._offset += len(data)
        self.commits += 1

    # --- writing -----------------------------------------------------------------------------

    async def append_batch(
        self, writer: str, bodies: Sequence[Mapping[str, Any]], seal: Sealer, *,
        wait: float | None = None,
    ) -> SealedBatch:
        def write(fd: int) -> SealedBatch:
            batch = seal(self._heads.get(writer, ChainHead(writer)), bodies)
            lines = [s.line for s in batch.sealed]
            if batch.checkpoint is not None:
                lines.append(canonicalize_text(batch.checkpoint.to_json()))
            if lines:
                self._write(fd, lines)
            return batch

        return await self._locked(write, wait)

    async def append_sealed(
        self, writer: str, records: Sequence[SealedRecord], checkpoints: Sequence[Checkpoint],
        *, wait: float | None = None,
    ) -> int | None:
        """Mirror records (and checkpoints) sealed by another sink. Records already in the file
        are skipped. If the file lacks records before the first one given, nothing is written
        and the file's head seq is returned: the caller fills the gap from the primary."""
        def write(fd: int) -> int | None:
            head = self._heads.get(writer, ChainHead(writer))
            fresh = [s for s in records if s.record["seq"] > head.seq]
            if fresh and fresh[0].record["seq"] != head.seq + 1:
                return head.seq
            last = fresh[-1].record["seq"] if fresh else head.seq
            signs = [c for c in checkpoints if head.checkpoint_seq < c.seq <= last]
            if not fresh and not signs:
                return None
            # records in order, each checkpoint right after the record it signs
            lines: list[str] = []
            pending = sorted(signs, key=lambda c: c.seq)
            for s in fresh:
                lines.append(s.line)
                while pending and pending[0].seq == s.record["seq"]:
                    lines.append(canonicalize_text(pending.pop(0).to_json()))
            lines.extend(canonicalize_text(c.to_json()) for c in pending)
            self._write(fd, lines)
            return None

        return await self._locked(write, wait)

    # --- reading -----------------------------------------------------------------------------

    def _contents(self) -> JsonlContents:
        data = self.path.read_bytes()
        text = data.decode("utf-8", "replace")
        return parse_jsonl(text.splitlines(), final_newline=not data or data.endswith(b"\n"))

    async def head(self, writer: str) -> ChainHead:
        return await self._locked(lambda fd: self._heads.get(writer, ChainHead(writer)))

    async def read(
        self, *, writer: str | None = None, after_seq: int = 0, since: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        contents = await asyncio.to_thread(self._contents)
        chains: dict[str, list[dict[str, Any]]] = {}
        for r in contents.records:
            w = r.get("writer")
            if isinstance(w, str) and (writer is None or w == writer):
                chains.setdefault(w, []).append(r)
        out: list[dict[str, Any]] = []
        for w in sorted(chains):
            chain = sorted(chains[w], key=lambda r: r.get("seq") or 0)
            start = after_seq
            if since is not None:
                later = [r["seq"] for r in chain if str(r.get("time", "")) >= since]
                if not later:
                    continue
                start = max(start, min(later) - 1)
            picked = [r for r in chain if (r.get("seq") or 0) > start]
            out.extend(picked if limit is None else picked[:limit])
        return out

    async def checkpoints(self, *, writer: str | None = None) -> list[Checkpoint]:
        contents = await asyncio.to_thread(self._contents)
        return [c for c in contents.checkpoints if writer is None or c.writer == writer]

    async def writers(self) -> list[str]:
        contents = await asyncio.to_thread(self._contents)
        found = {r.get("writer") for r in contents.records} | {
            c.writer for c in contents.checkpoints}
        return sorted(w for w in found if isinstance(w, str))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
