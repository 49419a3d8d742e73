"""``verify`` on chains changed every way an attacker could: each is found and the first bad
record named; and what cannot be found without an outside anchor is shown to be so."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from joserfc import jws

from bastion.audit.chain import record_hash
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.keys import AuditSigner
from bastion.audit.model import format_time
from bastion.audit.verify import decisions_without_outcome, verify
from tests.audit.chains import body, build, rechain


@pytest.fixture
def chain(signer: AuditSigner) -> tuple[list[dict[str, Any]], list[Checkpoint]]:
    return build(30, signer, every=10)


def first(report: Any) -> tuple[str, int | None]:
    assert not report.ok
    p = report.first_problem
    return p.kind, p.seq


def test_an_intact_chain_verifies(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    report = verify(records, checkpoints, signer.public_jwks())
    assert report.ok, report.problems
    assert report.records == 30
    (w,) = report.writers
    assert (w.first_seq, w.last_seq, w.signed_through, w.checkpoints) == (1, 30, 30, 3)
    assert report.unsigned == 0 and not report.warnings


def test_edit_a_field(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[14]["decision"] = "deny"
    report = verify(records, checkpoints, signer.public_jwks())
    assert first(report) == ("edited", 15)
    assert "record #15" in report.first_problem.describe()  # type: ignore[union-attr]


def test_edit_and_recompute_the_chain(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[14]["decision"] = "deny"
    report = verify(rechain(records), checkpoints, signer.public_jwks())
    # the chain is consistent again; the checkpoints at 20 and 30 no longer match
    assert first(report) == ("rewritten", 11)
    assert "between seq 11 and 20" in report.first_problem.message  # type: ignore[union-attr]


def test_edit_then_fix_the_hash_but_not_the_next_link(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[14]["decision"] = "deny"
    records[14]["hash"] = record_hash(records[14])
    assert first(verify(records, checkpoints, signer.public_jwks())) == ("broken_link", 16)


def test_delete_a_record(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    del records[14]
    report = verify(records, checkpoints, signer.public_jwks())
    assert first(report) == ("missing", 15)


def test_delete_and_renumber(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    del records[14]
    report = verify(rechain(records, renumber=True), checkpoints, signer.public_jwks())
    assert first(report) == ("rewritten", 11)


def test_insert_a_record(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    forged = copy.deepcopy(records[14])
    forged["correlation_id"] = "forged"
    forged["hash"] = record_hash(forged)
    records.insert(15, forged)
    assert first(verify(records, checkpoints, signer.public_jwks())) == ("duplicate", 15)


def test_insert_and_renumber(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records.insert(15, {**body(99), "v": 1, "writer": "w1", "seq": 0, "prev": "", "hash": ""})
    report = verify(rechain(records, renumber=True), checkpoints, signer.public_jwks())
    assert first(report) == ("rewritten", 11)


def test_reorder_two_records(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[14], records[15] = records[15], records[14]
    assert first(verify(records, checkpoints, signer.public_jwks())) == ("out_of_order", 16)


def test_reorder_and_recompute(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[14], records[15] = records[15], records[14]
    report = verify(rechain(records, renumber=True), checkpoints, signer.public_jwks())
    assert first(report) == ("rewritten", 11)


def test_truncate_the_tail(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    report = verify(records[:25], checkpoints, signer.public_jwks())
    assert first(report) == ("truncated", 26)
    assert "covers seq 30" in report.first_problem.message  # type: ignore[union-attr]


def test_truncate_everything(chain: Any, signer: AuditSigner) -> None:
    _, checkpoints = chain
    assert first(verify([], checkpoints, signer.public_jwks())) == ("truncated", 1)


def test_truncate_tail_and_its_checkpoint_needs_an_anchor(chain: Any,
                                                          signer: AuditSigner) -> None:
    """The limit: cut the records after seq 20 *and* the checkpoint at 30, and the rest is a
    valid, signed chain. Only a checkpoint kept elsewhere (an anchor) shows the cut."""
    records, checkpoints = chain
    report = verify(records[:20], checkpoints[:2], signer.public_jwks())
    assert report.ok
    anchor = checkpoints[2]  # e.g. the last line of yesterday's export
    report = verify(records[:20], [*checkpoints[:2], anchor], signer.public_jwks())
    assert first(report) == ("truncated", 21)


def test_unsigned_tail_is_a_warning_or_with_require_signed_a_failure(
        signer: AuditSigner) -> None:
    records, checkpoints = build(25, signer, every=10)
    checkpoints = checkpoints[:2]  # as after a crash: 21..25 not signed yet
    report = verify(records, checkpoints, signer.public_jwks())
    assert report.ok and report.unsigned == 5
    assert "5 record(s) after seq 20" in report.warnings[0]
    strict = verify(records, checkpoints, signer.public_jwks(), require_signed=True)
    assert first(strict) == ("unsigned", 21)


def test_forged_checkpoint_other_key(chain: Any, signer: AuditSigner) -> None:
    records, _checkpoints = chain
    records = rechain([*records[:10], *records[11:]], renumber=True)
    forger = AuditSigner.generate()
    from bastion.audit.chain import ChainHead

    fake = [forger.sign(ChainHead("w1", r["seq"], r["hash"]), format_time(0))
            for r in records if r["seq"] % 10 == 0]
    report = verify(records, fake, signer.public_jwks())
    assert not report.ok
    assert {p.kind for p in report.problems} == {"bad_checkpoint"}
    assert "unknown key" in report.problems[0].message
    assert report.writers[0].signed_through == 0


def test_forged_checkpoint_fields(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    moved = Checkpoint("w1", 25, records[24]["hash"], checkpoints[1].time, checkpoints[1].kid,
                       checkpoints[1].jws)
    report = verify(records, [checkpoints[0], moved, checkpoints[2]], signer.public_jwks())
    assert first(report)[0] == "bad_checkpoint"
    assert "differ from what was signed" in report.problems[0].message


def test_forged_checkpoint_payload(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    header, payload, signature = checkpoints[2].jws.split(".")
    from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

    data = json.loads(urlsafe_b64decode(payload.encode()))
    data["seq"] = 25
    data["hash"] = records[24]["hash"]
    forged_payload = urlsafe_b64encode(json.dumps(data).encode()).decode()
    forged = Checkpoint("w1", 25, records[24]["hash"], checkpoints[2].time, checkpoints[2].kid,
                        f"{header}.{forged_payload}.{signature}")
    report = verify(records[:25], [*checkpoints[:2], forged], signer.public_jwks())
    assert first(report)[0] == "bad_checkpoint"
    assert "bad signature" in report.problems[0].message


def test_checkpoint_of_another_writer_does_not_vouch(signer: AuditSigner) -> None:
    a, a_cps = build(10, signer, writer="a")
    b, _b_cps = build(10, signer, writer="b")
    stolen = Checkpoint("b", 10, b[-1]["hash"], a_cps[0].time, a_cps[0].kid, a_cps[0].jws)
    report = verify([*a, *b], [*a_cps, stolen], signer.public_jwks())
    assert first(report)[0] == "bad_checkpoint"


def test_several_writers_interleaved(signer: AuditSigner) -> None:
    a, a_cps = build(12, signer, writer="a")
    b, b_cps = build(7, signer, writer="b")
    merged = sorted([*a, *b], key=lambda r: r["time"])
    report = verify(merged, [*a_cps, *b_cps], signer.public_jwks())
    assert report.ok and [w.writer for w in report.writers] == ["a", "b"]
    merged.remove(b[3])
    assert first(verify(merged, [*a_cps, *b_cps], signer.public_jwks())) == ("missing", 4)


def test_partial_slice(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    strict = verify(records[12:], checkpoints, signer.public_jwks())
    assert first(strict) == ("missing", 1)
    sliced = verify(records[12:], [c for c in checkpoints if c.seq >= 13],
                    signer.public_jwks(), partial=True)
    assert sliced.ok


def test_malformed_records(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    records[3] = {"writer": "w1", "seq": "four"}
    report = verify(records, checkpoints, signer.public_jwks())
    assert first(report)[0] == "malformed"
    assert report.first_problem.position == 3  # type: ignore[union-attr]


def test_public_keys_forms(chain: Any, signer: AuditSigner) -> None:
    records, checkpoints = chain
    jwks = signer.public_jwks()
    for keys in (jwks, jwks["keys"], jwks["keys"][0], signer.public_keys()):
        assert verify(records, checkpoints, keys).ok
    with pytest.raises(ValueError, match="Ed25519"):
        verify(records, checkpoints, {"kty": "RSA", "n": "x", "e": "AQAB"})


def test_signature_uses_rfc9864_ed25519(chain: Any) -> None:
    _, checkpoints = chain
    header = jws.extract_compact(checkpoints[0].jws.encode()).headers()
    assert header["alg"] == "Ed25519"


def test_an_allowed_call_without_its_outcome_is_a_finding_not_a_break(
        signer: AuditSigner) -> None:
    """The decision is durable before the call goes upstream; the outcome is queued after the
    answer. A kill in between leaves a decision without an outcome: listed, chain intact."""
    records, checkpoints = build(29, signer, every=10)  # seq 29: req-29's decision, no outcome
    report = verify(records, checkpoints, signer.public_jwks())
    assert report.ok, report.problems
    assert report.without_outcome_count == 1
    (missing,) = report.without_outcome
    assert (missing.writer, missing.seq, missing.correlation_id) == ("w1", 29, "req-29")
    assert any("1 allowed call(s) have a decision record but no upstream outcome" in w
               for w in report.warnings)

    strict = verify(records, checkpoints, signer.public_jwks(), require_outcomes=True)
    assert first(strict) == ("no_outcome", 29)
    assert "req-29" in strict.first_problem.message  # type: ignore[union-attr]


def test_every_allowed_call_with_its_outcome_has_no_finding(signer: AuditSigner) -> None:
    records, checkpoints = build(30, signer, every=10)
    report = verify(records, checkpoints, signer.public_jwks(), require_outcomes=True)
    assert report.ok and report.without_outcome_count == 0 and not report.warnings


def test_only_allowed_decisions_wait_for_an_outcome() -> None:
    def rec(seq: int, kind: str, cid: str, decision: str | None = None) -> dict[str, Any]:
        r = {"writer": "w", "seq": seq, "kind": kind, "correlation_id": cid}
        return r if decision is None else {**r, "decision": decision}

    records = [rec(1, "gateway.decision", "a", "deny"), rec(2, "gateway.decision", "b", "step-up"),
               rec(3, "gateway.decision", "c", "allow"), rec(4, "gateway.upstream", "c"),
               rec(5, "gateway.decision", "d", "allow")]
    assert [m.correlation_id for m in decisions_without_outcome(records)] == ["d"]
