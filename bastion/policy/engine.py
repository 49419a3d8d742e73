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

__all__ = ["TARGETED_METHODS", "Decision", "Policy", "Rule", "Trace"]

Effect = Literal["allow", "deny", "require_scopes"]
TARGETED_METHODS = frozenset({"tools/call", "prompts/get", "resources/read",
                              "resources/subscribe", "resources/unsubscribe"})
DEFAULT_DENY_MESSAGE = "This operation is not permitted."
CANDIDATE_CACHE_SIZE = 10_000
BINDINGS_CACHE_SIZE = 4_096
_PER_CALL = frozenset({"args", "context"})


class Condition:
    """A compiled CEL expression and the variables it references."""

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        self.program = program
        # Names a macro binds (``args.exists(k, ...)``) are not variables the facts supply.
        bound = frozenset(_MACRO_BINDING.findall(source))
        self.variables = frozenset(str(v).split(".")[0] for v in program.variables()) - bound
        self.arg_fields = _arg_fields(source) if "args" in self.variables else frozenset()

    def run(self, context: Any) -> bool:
        try:
            result = self.program.execute(context)
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(result, bool):
            raise ValueError(f"condition gave {type(result).__name__}, not a bool")
        return result


_MACRO_BINDING = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_ARGS_USE = re.compile(r"\bargs\b(?:\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)(\s*\()?)?")


def _arg_fields(source: str) -> frozenset[str] | None:
    """The argument fields an expression reads, when it reads them only as ``args.NAME``;
    ``None`` when it may look at the whole map (``size(args)``, ``args.exists(...)``,
    ``args["x"]``, ``"x" in args``): then every argument is converted. Converting a value into
    CEL costs microseconds per string, so a call's other arguments (file contents, say) are
    not converted for nothing. Conservative: any other mention of ``args``, even inside a
    string literal, keeps the whole map."""
    fields: set[str] = set()
    for match in _ARGS_USE.finditer(source):
        field_name, call = match.group(1), match.group(2)
        if field_name is None or call is not None:
            return None
        fields.add(field_name)
    return frozenset(fields)


class _Bindings:
    """CEL contexts with the principal and the action already converted.

    Converting a Python value into CEL is the dominant cost of a decision (tens of
    microseconds for a principal with claims), and the principal and action repeat across
    calls: a verified token's Principal object is reused by the gateway's token cache. So one
    ``cel.Context`` is kept per (principal, claims, mount, method, name), bounded, and only
    the per-call variables (``args``, ``context``) are converted on each decision. The cache
    holds the principal and claims objects themselves, so an identity match cannot be a
    recycled ``id``. Decisions are synchronous (no await between binding and evaluation), so a
    shared context cannot be rebound by another decision halfway through.
    """

    def __init__(self, size: int = BINDINGS_CACHE_SIZE) -> None:
        self.size = size
        self._contexts: dict[tuple[int, int, str, str, str | None],
                             tuple[object, object, Any]] = {}

    def context(self, facts: Facts, names: frozenset[str],
                arg_fields: frozenset[str] | None) -> Any:
        key = (id(facts.principal), id(facts.claims), facts.mount, facts.method, facts.name)
        entry = self._contexts.get(key)
        if entry is None or entry[0] is not facts.principal or entry[1] is not facts.claims:
            context = cel.Context()
            # The target's rules always read the same variables: the fixed ones stay bound.
            for name, value in facts.variables(names - _PER_CALL).items():
                context.add_variable(name, value)
            if len(self._contexts) >= self.size:
                self._contexts.clear()
            self._contexts[key] = (facts.principal, facts.claims, context)
        else:
            context = entry[2]
        for name, value in facts.variables(names & _PER_CALL).items():
            # Narrowing saves conversions only; the conditions cannot observe other fields.
            if name == "args" and arg_fields is not None and len(value) > len(arg_fields):
                value = {k: value[k] for k in arg_fields if k in value}
            context.add_variable(name, value)
        return context


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


class _Plan:
    """The rules that apply to one (method, name, mount), split by effect, in file order, and
    every CEL variable their conditions read."""

    __slots__ = ("allow", "arg_fields", "deny", "require", "required", "requirers", "variables")

    def __init__(self, rules: list[Rule]) -> None:
        self.deny = tuple(r for r in rules if r.effect == "deny")
        self.require = tuple(r for r in rules if r.effect == "require_scopes")
        self.allow = tuple(r for r in rules if r.effect == "allow")
        # When no require_scopes rule has a condition, what they require is known in advance.
        unconditional = all(r.when is None for r in self.require)
        self.required: frozenset[str] | None = (
            frozenset(s for r in self.require for s in r.scopes) if unconditional else None)
        self.requirers = [r.id for r in self.require]
        self.variables = frozenset(v for r in rules if r.when is not None
                                   for v in r.when.variables)
        # Which arguments the conditions read (None: all of them).
        reads = [r.when.arg_fields for r in rules
                 if r.when is not None and "args" in r.when.variables]
        self.arg_fields: frozenset[str] | None = (
            None if any(f is None for f in reads)
            else frozenset(name for f in reads if f is not None for name in f))


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
        self._plans: dict[tuple[str, str | None, str], _Plan] = {}
        self._bindings = _Bindings()
        self._missing: dict[tuple[frozenset[str], frozenset[str]], tuple[str, ...]] = {}
        self._allowed = {r.id: Decision("allow", r.id, f"allowed by rule {r.id}")
                         for r in self.rules if r.effect == "allow"}

    def scopes(self) -> frozenset[str]:
        """Every scope a require_scopes rule can ask for."""
        return frozenset(s for r in self.rules for s in r.scopes)

    def _plan(self, method: str, name: str | None, mount: str) -> _Plan:
        # The rules that apply depend only on (method, name, mount): remembered, bounded.
        key = (method, name, mount)
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(self._index.get(method, self._empty).candidates(name, mount))
            if len(self._plans) >= CANDIDATE_CACHE_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _missing_scopes(self, granted: frozenset[str],
                        needed: frozenset[str] | set[str]) -> tuple[str, ...]:
        key = (granted, needed if isinstance(needed, frozenset) else frozenset(needed))
        missing = self._missing.get(key)
        if missing is None:
            missing = self.hierarchy.missing(granted, needed)
            if len(self._missing) >= CANDIDATE_CACHE_SIZE:
                self._missing.clear()
            self._missing[key] = missing
        return missing

    def _context(self, facts: Facts, plan: _Plan) -> Any:
        if not plan.variables:
            return None
        return self._bindings.context(facts, plan.variables, plan.arg_fields)

    def decide(self, facts: Facts, trace: Trace | None = None) -> Decision:
        plan = self._plan(facts.method, facts.name, facts.mount)
        context = self._context(facts, plan)
        if trace is None:
            fast = self._decide_fast(facts, plan, context)
            if fast is not None:
                return fast
        for rule in plan.deny:
            holds, error = _holds(rule, context, on_error=True)
            if trace is not None:
                trace.add(rule, _Note(rule, holds, error, True))
            if holds:
                note = _Note(rule, holds, error, True)
                return Decision("deny", rule.id, f"denied by rule {rule.id} ({note})",
                                rule.message or DEFAULT_DENY_MESSAGE)
        needed: frozenset[str] | set[str]
        if plan.required is not None and trace is None:
            needed, requirers = plan.required, plan.requirers
        else:
            needed, requirers = set(), []
            for rule in plan.require:
                holds, error = _holds(rule, context, on_error=True)
                if trace is not None:
                    trace.add(rule, _Note(rule, holds, error, True))
                if holds:
                    needed.update(rule.scopes)
                    requirers.append(rule.id)
        allow: Rule | None = None
        for rule in plan.allow:
            holds, error = _holds(rule, context, on_error=False)
            if trace is not None:
                trace.add(rule, _Note(rule, holds, error, False))
            if holds:
                allow = rule
                break
        missing = self._missing_scopes(facts.principal.scopes, needed) if needed else ()
        if missing:
            return Decision("step_up", requirers[0],
                            f"rules {', '.join(requirers)} need {' '.join(sorted(needed))}; "
                            f"missing {' '.join(missing)}",
                            f"This operation needs the scope {' '.join(missing)}.",
                            tuple(sorted(needed)))
        if allow is not None:
            return self._allowed[allow.id]
        if facts.method not in TARGETED_METHODS:
            return Decision("allow", None, "no rule applies to this method; it carries no target")
        return Decision("deny", None, "no rule allows this operation", DEFAULT_DENY_MESSAGE)

    def _decide_fast(self, facts: Facts, plan: _Plan, context: Any) -> Decision | None:
        """The common case, without the bookkeeping of explain: every condition evaluates,
        the require_scopes rules are unconditional, and an allow rule holds with nothing
        missing. ``None`` sends the decision down the full path, which gives the same answer
        with the reasons."""
        for rule in plan.deny:
            when = rule.when
            if when is None:
                return None
            try:
                if when.run(context):
                    return None
            except ValueError:
                return None
        if plan.required is None or (plan.required and self._missing_scopes(
                facts.principal.scopes, plan.required)):
            return None
        for rule in plan.allow:
            when = rule.when
            if when is None:
                return self._allowed[rule.id]
            try:
                if when.run(context):
                    return self._allowed[rule.id]
            except ValueError:
                continue
        return None

    def visible(self, facts: Facts) -> bool:
        """May the principal use ``facts.name`` at all? Arguments are unknown when listing:
        a condition that reads ``args`` might hold for some call, so it neither hides (deny,
        require_scopes) nor rules out (allow) the item."""
        plan = self._plan(facts.method, facts.name, facts.mount)
        context = self._context(facts, plan)
        for rule in plan.deny:
            if not _reads_args(rule) and _holds(rule, context, on_error=True)[0]:
                return False
        needed: set[str] = set()
        for rule in plan.require:
            if not _reads_args(rule) and _holds(rule, context, on_error=True)[0]:
                needed.update(rule.scopes)
        if needed and self._missing_scopes(facts.principal.scopes, needed):
            return False
        possible = any(_reads_args(rule) or _holds(rule, context, on_error=False)[0]
                       for rule in plan.allow)
        return possible or facts.method not in TARGETED_METHODS


def _reads_args(rule: Rule) -> bool:
    return rule.when is not None and "args" in rule.when.variables


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


def _holds(rule: Rule, context: Any, *, on_error: bool) -> tuple[bool, str | None]:
    """Does the rule's condition hold? A condition that cannot be evaluated counts as
    ``on_error`` (True for deny and require_scopes: fail closed), and the error is returned."""
    if rule.when is None:
        return True, None
    try:
        return rule.when.run(context), None
    except ValueError as exc:
        return on_error, str(exc)
