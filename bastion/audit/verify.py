"""Offline verification: ``verify(records, checkpoints, public_keys) -> Report``. Pure.

``records`` are taken in the order they were read (a JSONL file's line order, a store's
``seq`` order), grouped by writer. What is checked, per writer:

1. every record's ``hash`` is the SHA-256 of its canonical form          -> ``edited``
2. seqs run 1, 2, 3, ... in the order given, none twice                  -> ``missing``,
   ``out_of_order``, ``duplicate``
3. every ``prev`` is the hash of the record before it                    -> ``broken_link``
4. every checkpoint carries a valid Ed25519 signature by a known key,
   and its plain fields say what the signed payload says                 -> ``bad_checkpoint``
5. the record at each checkpoint's seq has the signed hash               -> ``rewritten``
6. no checkpoint names a seq past the last record present                -> ``truncated``

Beside the chain, a finding that is not a break: an allowed call's ``gateway.decision`` with no
``gateway.upstream`` record of the same correlation id (``Report.without_outcome``). The
decision is written before the call goes upstream; the outcome is queued after the answer and
written with the next batch, so a process killed (``kill -9``, power loss) before that batch
leaves decisions without outcomes; so do calls still running while the log is read. They are
listed as warnings; ``require_outcomes=True`` makes each one a ``no_outcome`` problem.

What it cannot see: records appended after the last checkpoint can be removed, or rewritten
with recomputed hashes, by someone able to write the store, and the result still verifies
(``Report.unsigned`` counts them; ``require_signed=True`` turns them into a failure). A log
closed cleanly ends on a checkpoint, so this only concerns the last few records written before a
crash (at most the checkpoint interval). Removing the tail *together with* its checkpoints is
only visible against a checkpoint kept elsewhere: pass it in ``checkpoints`` (an anchor, e.g. a
line of an earlier export). Deleting every record *and* checkpoint of a writer leaves nothing to
check unless such an anchor names that writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from joserfc.jwk import OKPKey

from bastion.audit.chain import GENESIS_HASH, RECORD_VERSION, record_hash
from bastion.audit.checkpoint import Checkpoint, CheckpointInvalid, open_checkpoint
from bastion.audit.keys import load_public_keys
from bastion.audit.rfc8785 import CanonicalizationError

__all__ = [
    "MissingOutcome", "Problem", "ProblemKind", "Report", "WriterSummary",
    "decisions_without_outcome", "verify",
]

ProblemKind = Literal[
    "malformed", "edited", "missing", "out_of_order", "duplicate", "broken_link",
    "bad_checkpoint", "rewritten", "truncated", "unsigned", "no_records", "no_outcome",
]
MAX_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class Problem:
    """``position``: index of the bad record in the input (None when it is not there at all:
    a truncated tail, a checkpoint line); ``seq``: the seq the problem is about."""

    kind: ProblemKind
    writer: str | None
    seq: int | None
    position: int | None
    message: str

    def describe(self) -> str:
        where = []
        if self.writer is not None:
            where.append(f"writer {self.writer}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        if self.position is not None:
            where.append(f"record #{self.position + 1}")
        return f"{self.kind}: {', '.join(where)}: {self.message}"


@dataclass(frozen=True, slots=True)
class MissingOutcome:
    """An allowed call's decision record with no upstream outcome record after it."""

    writer: str
    seq: int
    correlation_id: str
    time: str | None

    def describe(self) -> str:
        when = f" at {self.time}" if self.time else ""
        return f"writer {self.writer}, seq {self.seq}: correlation id {self.correlation_id}{when}"


def decisions_without_outcome(records: Iterable[Mapping[str, Any]]) -> list[MissingOutcome]:
    """Allowed ``gateway.decision`` records with no ``gateway.upstream`` record of the same
    correlation id among ``records``, by writer and seq."""
    allowed: list[Mapping[str, Any]] = []
    answered: set[str] = set()
    for record in records:
        kind, cid = record.get("kind"), record.get("correlation_id")
        if not isinstance(cid, str):
            continue
        if kind == "gateway.upstream":
            answered.add(cid)
        elif kind == "gateway.decision" and record.get("decision") == "allow":
            allowed.append(record)
    missing = [MissingOutcome(str(r.get("writer")), int(r.get("seq") or 0), r["correlation_id"],
                              r["time"] if isinstance(r.get("time"), str) else None)
               for r in allowed if r["correlation_id"] not in answered]
    return sorted(missing, key=lambda m: (m.writer, m.seq))


@dataclass(frozen=True, slots=True)
class WriterSummary:
    writer: str
    records: int
    first_seq: int | None
    last_seq: int | None
    head_hash: str | None
    signed_through: int       # the highest seq covered by a valid, matching checkpoint
    checkpoints: int          # valid checkpoints that match the records

    @property
    def unsigned(self) -> int:
        return 0 if self.last_seq is None else max(0, self.last_seq - self.signed_through)


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    records: int
    problems: tuple[Problem, ...]
    writers: tuple[WriterSummary, ...]
    warnings: tuple[str, ...] = field(default=())
    # allowed calls whose outcome is not in the log (the first MAX_PROBLEMS; the count of all)
    without_outcome: tuple[MissingOutcome, ...] = field(default=())
    without_outcome_count: int = 0

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def unsigned(self) -> int:
        return sum(w.unsigned for w in self.writers)


def _order_key(p: Problem) -> tuple[int, int]:
    # Problems at a record come first in input order; those about absent records after.
    return (p.position if p.position is not None else 1 << 62, p.seq or 0)


def verify(
    records: Iterable[Mapping[str, Any]],
    checkpoints: Iterable[Checkpoint],
    public_keys: Mapping[str, OKPKey] | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    partial: bool = False,
    require_signed: bool = False,
    require_outcomes: bool = False,
) -> Report:
    """Check records and checkpoints; name every problem, the first bad record first.

    ``partial``: the records are a slice (``export --since``): a chain may start past seq 1 and
    checkpoints before the slice are ignored. ``require_signed``: records past the last
    checkpoint are a failure rather than a warning. ``require_outcomes``: allowed calls without
    an outcome record are a failure rather than a warning.
    """
    keys = _keys(public_keys)
    problems: list[Problem] = []
    chains: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    count = 0
    for position, record in enumerate(records):
        count += 1
        reason = _malformed(record)
        if reason:
            writer = record.get("writer") if isinstance(record, Mapping) else None
            problems.append(Problem("malformed", writer if isinstance(writer, str) else None,
                                    None, position, reason))
            continue
        chains.setdefault(record["writer"], []).append((position, record))

    by_writer: dict[str, list[Checkpoint]] = {}
    for cp in checkpoints:
        by_writer.setdefault(cp.writer, []).append(cp)

    summaries: list[WriterSummary] = []
    warnings: list[str] = []
    for writer in sorted(set(chains) | set(by_writer)):
        chain = chains.get(writer, [])
        summary = _verify_writer(writer, chain, by_writer.get(writer, []), keys, partial,
                                 problems)
        summaries.append(summary)
        if summary.unsigned:
            note = (f"writer {writer}: {summary.unsigned} record(s) after seq "
                    f"{summary.signed_through} are not covered by a signed checkpoint")
            if require_signed:
                problems.append(Problem(
                    "unsigned", writer, summary.signed_through + 1,
                    _position_of(chain, summary.signed_through + 1), note))
            else:
                warnings.append(note)
    unanswered = decisions_without_outcome(
        record for chain in chains.values() for _, record in chain)
    if unanswered:
        warnings.append(
            f"{len(unanswered)} allowed call(s) have a decision record but no upstream outcome "
            "record: the calls were still running, or the process stopped (kill -9, a crash, "
            "a power loss) before it wrote their outcomes")
    if require_outcomes:
        for missing in unanswered:
            problems.append(Problem(
                "no_outcome", missing.writer, missing.seq,
                _position_of(chains[missing.writer], missing.seq),
                f"allowed call {missing.correlation_id} has no upstream outcome record"))
    problems.sort(key=_order_key)
    return Report(not problems, count, tuple(problems[:MAX_PROBLEMS]), tuple(summaries),
                  tuple(warnings), tuple(unanswered[:MAX_PROBLEMS]), len(unanswered))


def _keys(source: Any) -> dict[str, OKPKey]:
    if isinstance(source, Mapping) and all(isinstance(v, OKPKey) for v in source.values()):
        return dict(source)
    return load_public_keys(source)


def _malformed(record: Any) -> str | None:
    if not isinstance(record, Mapping):
        return "not a JSON object"
    if record.get("v") != RECORD_VERSION:
        return f"unknown record version {record.get('v')!r}"
    if not isinstance(record.get("writer"), str) or not record["writer"]:
        return "no writer"
    seq = record.get("seq")
    if type(seq) is not int or seq < 1:
        return f"bad seq {seq!r}"
    for name in ("prev", "hash"):
        value = record.get(name)
        if not isinstance(value, str) or len(value) != 64:
            return f"bad {name}"
    return None


def _position_of(chain: list[tuple[int, Mapping[str, Any]]], seq: int) -> int | None:
    for position, record in chain:
        if record["seq"] == seq:
            return position
    return None


def _verify_writer(
    writer: str,
    chain: list[tuple[int, Mapping[str, Any]]],
    checkpoints: list[Checkpoint],
    keys: Mapping[str, OKPKey],
    partial: bool,
    problems: list[Problem],
) -> WriterSummary:
    def add(kind: ProblemKind, seq: int | None, position: int | None, message: str) -> None:
        problems.append(Problem(kind, writer, seq, position, message))

    seqs: dict[int, str] = {}         # seq -> stored hash
    for position, record in chain:
        seq = record["seq"]
        if seq in seqs:
            add("duplicate", seq, position, "a second record with this seq (an insertion)")
            continue
        seqs[seq] = record["hash"]
    start = min(seqs) if (partial and seqs) else 1

    previous_seq: int | None = None
    for position, record in chain:
        seq = record["seq"]
        try:
            intact = record_hash(record) == record["hash"]
        except CanonicalizationError as exc:
            add("malformed", seq, position, f"not canonicalisable: {exc}")
            intact = False
        if not intact:
            add("edited", seq, position, "the record does not match its hash (it was altered)")
        expected = start if previous_seq is None else previous_seq + 1
        if seq < expected:
            add("out_of_order", seq, position,
                f"seq {seq} comes after seq {expected - 1} (reordered or inserted)")
        elif seq > expected:
            absent = [s for s in range(expected, seq) if s not in seqs]
            if absent:
                span = (f"seq {absent[0]}" if len(absent) == 1
                        else f"seq {absent[0]}..{absent[-1]}")
                add("missing", absent[0], position,
                    f"{span} missing before this record (deleted)")
            else:
                add("out_of_order", seq, position,
                    f"seq {seq} comes where seq {expected} belongs (reordered)")
        if seq > start or not partial:
            want = GENESIS_HASH if seq == 1 else seqs.get(seq - 1)
            if want is not None and record["prev"] != want:
                add("broken_link", seq, position,
                    f"prev is not the hash of seq {seq - 1}: that record was altered, or this "
                    "one was inserted and the chain recomputed")
        previous_seq = seq if previous_seq is None else max(previous_seq, seq)

    last_seq = max(seqs) if seqs else None
    matched: list[int] = []
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        try:
            payload = open_checkpoint(cp.jws, keys)
        except CheckpointInvalid as exc:
            add("bad_checkpoint", cp.seq, None, f"checkpoint at seq {cp.seq}: {exc}")
            continue
        signed = (payload["writer"], payload["seq"], payload["hash"], payload["time"])
        if signed != (cp.writer, cp.seq, cp.hash, cp.time):
            add("bad_checkpoint", cp.seq, None,
                f"checkpoint fields differ from what was signed (writer {payload['writer']}, "
                f"seq {payload['seq']})")
            continue
        seq = cp.seq
        if partial and seqs and seq < start:
            continue
        if last_seq is None or seq > last_seq:
            have = "no records" if last_seq is None else f"records end at seq {last_seq}"
            add("truncated", (last_seq or 0) + 1, None,
                f"a signed checkpoint covers seq {seq} but {have}: the tail was removed")
            continue
        if seq == 0:
            continue
        if seqs.get(seq) != cp.hash:
            below = [m for m in matched if m < seq]
            first_bad = (max(below) + 1) if below else start
            add("rewritten", first_bad, _position_of(chain, first_bad),
                f"the chain at seq {seq} does not match its signed checkpoint: a record between "
                f"seq {first_bad} and {seq} was altered, inserted, removed or reordered")
            continue
        matched.append(seq)

    return WriterSummary(
        writer=writer, records=len(chain), first_seq=min(seqs) if seqs else None,
        last_seq=last_seq, head_hash=seqs.get(last_seq) if last_seq is not None else None,
        signed_through=max(matched) if matched else (start - 1 if partial else 0),
        checkpoints=len(matched),
    )
