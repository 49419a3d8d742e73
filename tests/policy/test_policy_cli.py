"""``bastion policy test`` and ``bastion policy explain`` from the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

POLICY = """
[[rules]]
id = "readers"
effect = "allow"
tools = ["read_file"]

[[rules]]
id = "bounded-pay"
effect = "allow"
tools = "pay"
when = "args.amount <= 100"

[[rules]]
id = "pay-scope"
effect = "require_scopes"
tools = "pay"
scopes = ["payments"]

[[tests]]
name = "reader can read"
principal = { sub = "alice", scopes = [] }
tool = "read_file"
expect = "allow"

[[tests]]
name = "small payment"
principal = { sub = "alice", scopes = ["payments"] }
tool = "pay"
args = { amount = 50 }
expect = "allow"

[[tests]]
name = "big payment refused"
principal = { sub = "alice", scopes = ["payments"] }
tool = "pay"
args = { amount = 5000 }
expect = "deny"

[[tests]]
name = "payment needs the scope"
principal = { sub = "alice", scopes = [] }
tool = "pay"
args = { amount = 5 }
expect = "step_up"
scopes = ["payments"]
"""


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_policy_test_passes_and_reports_counts(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(POLICY)
    r = bastion("policy", "test", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed, 0 failed" in r.stdout
    assert "PASS big payment refused" in r.stdout


def test_policy_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(POLICY.replace('args = { amount = 5000 }\nexpect = "deny"',
                                   'args = { amount = 5000 }\nexpect = "allow"'))
    r = bastion("policy", "test", str(path))
    assert r.returncode == 1
    assert "FAIL big payment refused: expected allow, got deny" in r.stdout
    assert "rule bounded-pay: condition 'args.amount <= 100' is false" in r.stdout
    assert "3 passed, 1 failed" in r.stdout


def test_policy_test_with_a_bad_policy_names_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nid = "x"\neffect = "allow"\ntools = "t"\nwhen = "args.("\n')
    r = bastion("policy", "test", str(path))
    assert r.returncode == 2
    assert "rules[0] (x)" in r.stderr
    assert "not valid CEL" in r.stderr


def test_policy_explain_names_the_deciding_rule_and_why(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(POLICY)
    r = bastion("policy", "explain", str(path), "--tool", "pay", "--args", '{"amount": 500}',
                "--scopes", "payments")
    assert r.returncode == 0, r.stderr
    assert "decision: deny" in r.stdout
    assert "decided by: (default): no rule allows this operation" in r.stdout
    assert "rule bounded-pay: condition 'args.amount <= 100' is false" in r.stdout
    r = bastion("policy", "explain", str(path), "--tool", "pay", "--args", '{"amount": 5}')
    assert "decision: step_up (needs payments)" in r.stdout
    assert "decided by: pay-scope" in r.stdout
