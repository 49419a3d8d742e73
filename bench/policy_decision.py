"""Policy decision time for 20 and 200 rules, p50 and p99 (target: p50 <= 20 us at 200).

Baseline in the same run: the same decision with a policy of 1 rule, so the ratio shows what
the rule count costs (it should cost almost nothing: rules are indexed by method and name, and
only the applicable conditions are evaluated)."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import write_results  # noqa: E402

from bastion.policy import Facts, parse_policy  # noqa: E402
from bastion.principal import Principal  # noqa: E402

ROUNDS = 5


def policy_with(n: int):  # type: ignore[no-untyped-def]
    rules = []
    for i in range(n):
        rules.append({"id": f"allow-{i}", "effect": "allow", "tools": f"tool_{i}",
                      "when": f'args.amount <= {i * 10 + 100} && args.path.startsWith("/data/")'})
    rules.append({"id": "secrets", "effect": "deny", "tools": "*",
                  "when": 'has(args.path) && args.path.contains("/secrets/")'})
    rules.append({"id": "scope", "effect": "require_scopes", "tools": "tool_*",
                  "scopes": ["files:write"]})
    return parse_policy({"rules": rules}, source=f"{n} rules")


def measure(n: int, rounds: int = 20000) -> dict[str, float]:
    policy = policy_with(n)
    principal = Principal(issuer="i", subject="alice", client_id="c",
                          scopes=frozenset({"files:write"}), audience=(), expires_at=0)
    name = f"tool_{n - 1}"

    def call(i: int) -> Facts:
        # Every call has its own arguments, as a parsed request would: nothing about them can
        # be remembered between calls. Built just before the clock starts, as the gateway
        # builds them just before deciding.
        return Facts(principal=principal, mount="m", method="tools/call", name=name,
                     arguments={"amount": i % 97, "path": f"/data/{i}.txt"})

    for i in range(2000):
        assert policy.decide(call(i)).allowed
    samples = []
    for i in range(rounds):
        facts = call(i)
        t = time.perf_counter_ns()
        decision = policy.decide(facts)
        samples.append(time.perf_counter_ns() - t)
        assert decision.allowed
    samples.sort()
    return {"rules": n, "p50_us": samples[len(samples) // 2] / 1000,
            "p99_us": samples[int(len(samples) * 0.99)] / 1000}


def main() -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    # Rounds interleave the sizes; each figure is the median over rounds (the host's speed
    # drifts between seconds on a shared machine; within a round the sizes see the same).
    runs: dict[int, list[dict[str, float]]] = {1: [], 20: [], 200: []}
    for _ in range(ROUNDS):
        for n in runs:
            runs[n].append(measure(n))
    rows = [{"rules": n, "p50_us": statistics.median(r["p50_us"] for r in rs),
             "p99_us": statistics.median(r["p99_us"] for r in rs),
             "p50_us_rounds": [r["p50_us"] for r in rs]} for n, rs in runs.items()]
    base = rows[0]
    print(f"{'rules':>6}{'p50 us':>10}{'p99 us':>10}{'p50 vs 1 rule':>16}   p50 per round")
    for r in rows:
        print(f"{r['rules']:>6}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}"
              f"{r['p50_us'] / base['p50_us']:>15.2f}x   "
              + " ".join(f"{v:.1f}" for v in r["p50_us_rounds"]))
    write_results("policy_decision", rows)


if __name__ == "__main__":
    main()
