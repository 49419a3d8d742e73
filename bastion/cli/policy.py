"""``bastion policy test|explain``: run a policy's unit tests; say which rule decides, and why."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from bastion.policy import PolicyError, Trace, load_policy
from bastion.policy.cases import facts_from, parse_cases, run_cases

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "policy", help="test and explain policies",
        description="Run a policy's unit tests, or explain one decision.")
    verbs = p.add_subparsers(dest="policy_verb", metavar="VERB", required=True)

    t = verbs.add_parser("test", help="run the [[tests]] of a policy file (or of --tests FILE)",
                         description="Run policy unit tests: principal, action, arguments -> "
                                     "expected effect. Exit 1 if any fails.")
    t.add_argument("policy", type=Path, help="policy file (TOML)")
    t.add_argument("--tests", type=Path, help="a separate file of [[tests]]")
    t.add_argument("-v", "--verbose", action="store_true", help="show every rule considered")
    t.set_defaults(func=run_test)

    e = verbs.add_parser("explain", help="which rule decides a request, and why",
                         description="Evaluate one request against a policy and show each "
                                     "rule considered.")
    e.add_argument("policy", type=Path, help="policy file (TOML)")
    target = e.add_mutually_exclusive_group(required=True)
    target.add_argument("--tool")
    target.add_argument("--prompt")
    target.add_argument("--resource")
    target.add_argument("--method")
    e.add_argument("--name", help="target name with --method")
    e.add_argument("--args", default="{}", help="tool arguments as a JSON object")
    e.add_argument("--sub", default="user", help="principal subject")
    e.add_argument("--client-id", default="client")
    e.add_argument("--scopes", default="", help="granted scopes, space separated")
    e.add_argument("--claims", default="{}", help="token claims as a JSON object")
    e.add_argument("--mount", default="")
    e.set_defaults(func=run_explain)


def _show_trace(trace: Trace, indent: str = "  ") -> None:
    for rule, note in trace.steps:
        print(f"{indent}rule {rule}: {note}")
    if not trace.steps:
        print(f"{indent}no rule applies")


def run_test(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
        source = args.tests or args.policy
        data = tomllib.loads(Path(source).read_text("utf-8"))
        cases = parse_cases(data, str(source))
    except (PolicyError, OSError, tomllib.TOMLDecodeError) as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return 2
    if not cases:
        print(f"bastion: no [[tests]] in {source}", file=sys.stderr)
        return 2
    failed = 0
    for outcome in run_cases(policy, cases):
        d = outcome.decision
        status = "PASS" if outcome.passed else "FAIL"
        failed += not outcome.passed
        got = d.effect + (f" {' '.join(d.scopes)}" if d.scopes else "")
        print(f"{status} {outcome.case.name}: expected {outcome.case.expect}, got {got} "
              f"({d.reason})")
        if args.verbose or not outcome.passed:
            _show_trace(outcome.trace, "    ")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def run_explain(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
        raw: dict[str, Any] = {
            "principal": {"sub": args.sub, "client_id": args.client_id,
                          "scopes": args.scopes.split(), "claims": json.loads(args.claims)},
            "args": json.loads(args.args), "mount": args.mount}
        for key in ("tool", "prompt", "resource", "method", "name"):
            if getattr(args, key):
                raw[key] = getattr(args, key)
        facts = facts_from(raw, "command line", "explain")
    except (PolicyError, ValueError) as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return 2
    trace = Trace()
    decision = policy.decide(facts, trace)
    print(f"decision: {decision.effect}" + (f" (needs {' '.join(decision.scopes)})"
                                            if decision.scopes else ""))
    print(f"decided by: {decision.rule or '(default)'}: {decision.reason}")
    if decision.message:
        print(f"client sees: {decision.message}")
    print("rules considered:")
    _show_trace(trace)
    return 0
