"""Build chains by hand, and rewrite them the way an attacker who knows the format would."""

from __future__ import annotations

import copy
from typing import Any

from bastion.audit.chain import GENESIS_HASH, ChainHead, record_hash, seal_all
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.keys import AuditSigner
from bastion.audit.model import AuditEvent, Principal, UpstreamOutcome, format_time

__all__ = ["build", "rechain"]


def body(i: int, t0: float = 1_800_000_000.0) -> dict[str, Any]:
    """Record ``i`` of an intact gateway log: odd ones an allowed call's decision, even ones
    the upstream outcome of the call before."""
    if i % 2 == 0:
        outcome = AuditEvent("gateway.upstream", correlation_id=f"req-{i - 1}",
                             mount="/files", method="tools/call", tool="read_file",
                             upstream=UpstreamOutcome("ok", 1.5, status=200))
        return outcome.to_body(t0 + i)
    event = AuditEvent("gateway.decision", correlation_id=f"req-{i}",
                       principal=Principal("https://as.example", f"user-{i % 3}"),
                       client_id="client-1", mount="/files", method="tools/call",
                       tool="read_file", decision="allow", rule="r-read")
    return event.to_body(t0 + i)


def build(n: int, signer: AuditSigner, *, writer: str = "w1", every: int = 10,
          t0: float = 1_800_000_000.0) -> tuple[list[dict[str, Any]], list[Checkpoint]]:
    """``n`` records; a checkpoint after every ``every``-th record and at the end."""
    records: list[dict[str, Any]] = []
    checkpoints: list[Checkpoint] = []
    head = ChainHead(writer)
    for i in range(1, n + 1):
        sealed, rejected, head = seal_all(head, [body(i, t0)])
        assert not rejected
        records.append(sealed[0].record)
        if i % every == 0 or i == n:
            checkpoints.append(signer.sign(head, format_time(t0 + i)))
    return records, checkpoints


def rechain(records: list[dict[str, Any]], *, renumber: bool = False) -> list[dict[str, Any]]:
    """Recompute every seq (if asked), prev and hash: a forger covering their tracks."""
    out = copy.deepcopy(records)
    prev = GENESIS_HASH
    for i, r in enumerate(out, start=1):
        if renumber:
            r["seq"] = i
        r["prev"] = prev
        r["hash"] = record_hash(r)
        prev = r["hash"]
    return out
