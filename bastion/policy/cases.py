"""Policy unit tests as data: principal, action, arguments -> expected effect. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bastion.policy.engine import Decision, Policy, Trace
from bastion.policy.facts import Facts
from bastion.policy.load import PolicyError
from bastion.principal import Principal

__all__ = ["Case", "Outcome", "facts_from", "parse_cases", "run_cases"]

_TARGET_KEYS = {"tool": "tools/call", "prompt": "prompts/get", "resource": "resources/read"}
_EXPECT = ("allow", "deny", "step_up")


@dataclass(frozen=True)
class Case:
    name: str
    facts: Facts
    expect: str
    scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Outcome:
    case: Case
    decision: Decision
    trace: Trace

    @property
    def passed(self) -> bool:
        if self.decision.effect != self.case.expect:
            return False
        return self.case.scopes is None or tuple(sorted(self.case.scopes)) == \
            self.decision.scopes


def facts_from(raw: Mapping[str, Any], where: str, source: str) -> Facts:
    """Facts from a table: ``principal = {sub, scopes, client_id, iss, claims}``, ``tool`` /
    ``prompt`` / ``resource`` (or ``method`` + ``name``), ``args``, ``mount``."""
    p = raw.get("principal", {})
    if not isinstance(p, Mapping):
        raise PolicyError(source, where, "principal must be a table")
    scopes = p.get("scopes", [])
    if isinstance(scopes, str):
        scopes = scopes.split()
    claims = p.get("claims", {})
    if not isinstance(scopes, list) or not isinstance(claims, Mapping):
        raise PolicyError(source, where, "principal.scopes must be a list, claims a table")
    principal = Principal(issuer=str(p.get("iss", "https://issuer.example")),
                          subject=str(p.get("sub", "user")),
                          client_id=str(p.get("client_id", "client")),
                          scopes=frozenset(str(s) for s in scopes), audience=(),
                          expires_at=0, act=tuple(p.get("act", ())), claims=dict(claims))
    method, name = raw.get("method"), raw.get("name")
    for key, implied in _TARGET_KEYS.items():
        if key in raw:
            method, name = method or implied, raw[key]
    if not isinstance(method, str):
        raise PolicyError(source, where, "give tool, prompt, resource, or method (+ name)")
    args = raw.get("args", {})
    if not isinstance(args, Mapping):
        raise PolicyError(source, where, "args must be a table")
    return Facts(principal=principal, mount=str(raw.get("mount", "")), method=method,
                 name=str(name) if name is not None else None, arguments=dict(args),
                 claims=dict(claims))


def parse_cases(data: Mapping[str, Any], source: str) -> list[Case]:
    raw_cases = data.get("tests", [])
    if not isinstance(raw_cases, list):
        raise PolicyError(source, "tests", "must be an array of tables ([[tests]])")
    cases = []
    for i, raw in enumerate(raw_cases):
        where = f"tests[{i}]"
        if not isinstance(raw, Mapping):
            raise PolicyError(source, where, "a test must be a table")
        expect = raw.get("expect")
        if expect not in _EXPECT:
            raise PolicyError(source, where, f"expect must be one of {', '.join(_EXPECT)}")
        scopes = raw.get("scopes")
        cases.append(Case(name=str(raw.get("name", where)), facts=facts_from(raw, where, source),
                          expect=expect, scopes=tuple(scopes) if scopes is not None else None))
    return cases


def run_cases(policy: Policy, cases: list[Case]) -> list[Outcome]:
    outcomes = []
    for case in cases:
        trace = Trace()
        outcomes.append(Outcome(case, policy.decide(case.facts, trace), trace))
    return outcomes
