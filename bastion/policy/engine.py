"""Evaluation: ``Policy.decide(facts) -> Decision`` and ``Policy.visible(...)`` for lists.

Semantics (deny overrides):
1. a matching ``deny`` rule whose condition holds denies (a condition that fails to evaluate
   counts as holding: fail closed);
2. otherwise every matching ``require_scopes`` rule whose condition holds adds its scopes; if the
   token lacks any, the answer is step-up naming all of them;
3. otherwise a matching ``allow`` rule whose condition holds allows;
4. otherwise the operation is denied: a mount with a policy allows only what a rule allows.

Methods without a target (``initialize``, ``ping``, list methods, notifications, ...) are
allowed unless a ``deny`` rule names them; list results are filtered with ``visible``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import cel

from bastion.oauth.scopes import ScopeHierarchy
from bastion.policy.facts import Facts

__all__ = ["TARGETED_METHODS", "Bindings", "Decision", "Policy", "Rule", "Trace"]

Effect = Literal["allow", "deny", "require_scopes"]
TARGETED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read",
                              "resources/subscribe", "resources/unsubscribe"})
DEFAULT_DENY_MESSAGE = "This operation is not permitted."
CANDIDATE_CACHE_SIZE = 10_000


class Condition:
    """A compiled CEL expression and the variables it references."""

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self.program = program
        self.variables = frozenset(str(v).split(".")[0] for v in program.variables())

    def evaluate(self, facts: Facts | Bindings) -> bool:
        """True/False; raises ``ValueError`` when the expression cannot be evaluated."""
        bindings = facts if isinstance(facts, Bindings) else Bindings(facts)
        try:
            result = self.program.execute(bindings.context(self.variables))
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(result, bool):
            raise ValueError(f"condition gave {type(result).__name__}, not a bool")
        return result


class Bindings:
    """The CEL variables of one decision, converted once and shared by every condition."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self._context = cel.Context()
        self._bound: set[str] = set()

    def context(self, names: frozenset[str]) -> Any:
        missing = names - self._bound
        if missing:
            for name, value in self.facts.variables(frozenset(missing)).items():
                self._context.add_variable(name, value)
            self._bound |= missing
        return self._context


@dataclass(frozen=True)
class Rule:
    id: str
    effect: Effect
    methods: frozenset[str]
    names: tuple[str, ...] = ()  # exact names or glob patterns; () = every name
    mounts: frozenset[str] = frozenset()  # () = every mount
    when: Condition | None = None
    scopes: tuple[str, ...] = ()
    message: str = ""
    index: int = 0

    def __post_init__(self) -> None:
        # Compiled once: exact names in a set, patterns as regular expressions.
        object.__setattr__(self, "_exact", frozenset(n for n in self.names if not _is_glob(n)))
        object.__setattr__(self, "_patterns", tuple(
            re.compile(fnmatch.translate(n)) for n in self.names if _is_glob(n)))

    def matches_name(self, name: str | None) -> bool:
        if not self.names:
            return True
        if name is None:
            return False
        exact: frozenset[str] = self._exact  # type: ignore[attr-defined]
        patterns: tuple[re.Pattern[str], ...] = self._patterns  # type: ignore[attr-defined]
        return name in exact or any(p.match(name) for p in patterns)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass(frozen=True)
class Decision:
    effect: Literal["allow", "deny", "step_up"]
    rule: str | None
    reason: str
    message: str = ""
    scopes: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"


@dataclass
class Trace:
    """What ``explain`` shows: each rule considered, and what its condition gave."""

    steps: list[tuple[str, str]] = field(default_factory=list)

    def add(self, rule: Rule, outcome: object) -> None:
        self.steps.append((rule.id, str(outcome)))


def _by_index(rule: Rule) -> int:
    return rule.index


class _Index:
    """Rules of one method: by exact name, plus those with patterns or no names."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.exact: dict[str, list[Rule]] = {}
        self.general: list[Rule] = []
        for r in rules:
            if r.names and not any(_is_glob(n) for n in r.names):
                for n in r.names:
                    self.exact.setdefault(n, []).append(r)
            else:
                self.general.append(r)

    def candidates(self, name: str | None, mount: str) -> list[Rule]:
        found = [r for r in self.general if r.matches_name(name)
                 and (not r.mounts or mount in r.mounts)]
        exact = self.exact.get(name, ()) if name is not None else ()
        if exact:
            found.extend(r for r in exact if not r.mounts or mount in r.mounts)
            found.sort(key=_by_index)
        return found


class Policy:
    def __init__(self, rules: Iterable[Rule], *, hierarchy: ScopeHierarchy | None = None,
                 source: str = "") -> None:
        self.rules = tuple(rules)
        self.hierarchy = hierarchy or ScopeHierarchy()
        self.source = source
        by_method: dict[str, list[Rule]] = {}
        for r in self.rules:
            for m in r.methods:
                by_method.setdefault(m, []).append(r)
        self._index = {m: _Index(rs) for m, rs in by_method.items()}
        self._empty = _Index(())
        self._cache: dict[tuple[str, str | None, str], list[Rule]] = {}

    def scopes(self) -> frozenset[str]:
        """Every scope a require_scopes rule can ask for."""
        return frozenset(s for r in self.rules for s in r.scopes)

    def _candidates(self, method: str, name: str | None, mount: str) -> list[Rule]:
        # The rules that apply depend only on (method, name, mount): remembered, bounded.
        key = (method, name, mount)
        found = self._cache.get(key)
        if found is None:
            found = self._index.get(method, self._empty).candidates(name, mount)
            if len(self._cache) >= CANDIDATE_CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def decide(self, facts: Facts, trace: Trace | None = None) -> Decision:
        rules = self._candidates(facts.method, facts.name, facts.mount)
        bindings = Bindings(facts)
        allow: Rule | None = None
        needed: set[str] = set()
        requirers: list[str] = []
        for rule in rules:
            if rule.effect == "deny":
                holds, note = _holds(rule, bindings, on_error=True)
                if trace is not None:
                    trace.add(rule, note)
                if holds:
                    return Decision("deny", rule.id, f"denied by rule {rule.id} ({note})",
                                    rule.message or DEFAULT_DENY_MESSAGE)
        for rule in rules:
            if rule.effect == "require_scopes":
                holds, note = _holds(rule, bindings, on_error=True)
                if trace is not None:
                    trace.add(rule, note)
                if holds:
                    needed.update(rule.scopes)
                    requirers.append(rule.id)
            elif rule.effect == "allow" and allow is None:
                holds, note = _holds(rule, bindings, on_error=False)
                if trace is not None:
                    trace.add(rule, note)
                if holds:
                    allow = rule
        missing = self.hierarchy.missing(facts.principal.scopes, needed) if needed else ()
        if missing:
            return Decision("step_up", requirers[0],
                            f"rules {', '.join(requirers)} need {' '.join(sorted(needed))}; "
                            f"missing {' '.join(missing)}",
                            f"This operation needs the scope {' '.join(missing)}.",
                            tuple(sorted(needed)))
        if allow is not None:
            return Decision("allow", allow.id, f"allowed by rule {allow.id}")
        if facts.method not in TARGETED_METHODS:
            return Decision("allow", None, "no rule applies to this method; it carries no target")
        return Decision("deny", None, "no rule allows this operation", DEFAULT_DENY_MESSAGE)

    def visible(self, facts: Facts) -> bool:
        """May the principal use ``facts.name`` at all? Arguments are unknown when listing:
        a condition that reads ``args`` might hold for some call, so it neither hides (deny,
        require_scopes) nor rules out (allow) the item."""
        rules = self._candidates(facts.method, facts.name, facts.mount)
        bindings = Bindings(facts)
        needed: set[str] = set()
        possible = False
        for rule in rules:
            depends = rule.when is not None and "args" in rule.when.variables
            if rule.effect == "deny":
                if not depends and _holds(rule, bindings, on_error=True)[0]:
                    return False
            elif rule.effect == "require_scopes":
                if not depends and _holds(rule, bindings, on_error=True)[0]:
                    needed.update(rule.scopes)
            elif depends or _holds(rule, bindings, on_error=False)[0]:
                possible = True
        if self.hierarchy.missing(facts.principal.scopes, needed):
            return False
        return possible or facts.method not in TARGETED_METHODS


class _Note:
    """Why a rule held or not; rendered only when someone reads it (explain, a deny)."""

    __slots__ = ("error", "on_error", "rule", "value")

    def __init__(self, rule: Rule, value: bool, error: str | None, on_error: bool) -> None:
        self.rule, self.value, self.error, self.on_error = rule, value, error, on_error

    def __str__(self) -> str:
        if self.rule.when is None:
            return "matches (no condition)"
        if self.error is not None:
            return f"condition failed to evaluate ({self.error}); counted as {self.on_error}"
        return f"condition {self.rule.when.source!r} is {str(self.value).lower()}"


def _holds(rule: Rule, bindings: Bindings, *, on_error: bool) -> tuple[bool, _Note]:
    if rule.when is None:
        return True, _Note(rule, True, None, on_error)
    try:
        value = rule.when.evaluate(bindings)
    except ValueError as exc:
        return on_error, _Note(rule, on_error, str(exc), on_error)
    return value, _Note(rule, value, None, on_error)
