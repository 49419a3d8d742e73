"""Reading a policy file (TOML): rules checked and compiled once, with errors that name the
file, the rule and what is wrong."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cel

from bastion.errors import BastionError
from bastion.oauth.scopes import ScopeHierarchy, parse_scopes
from bastion.policy.engine import Condition, Policy, Rule

__all__ = ["PolicyError", "load_policy", "parse_policy"]

_EFFECTS = ("allow", "deny", "require_scopes")
_KEYS = frozenset({"id", "effect", "methods", "tools", "prompts", "resources", "names",
                   "mounts", "when", "scopes", "message"})
# Shorthand keys name the targets of one kind and imply its methods.
_SHORTHAND = {"tools": ("tools/call",), "prompts": ("prompts/get",),
              "resources": ("resources/read", "resources/subscribe", "resources/unsubscribe")}
_VARIABLES = frozenset({"principal", "action", "args", "context"})


class PolicyError(BastionError):
    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source, self.where, self.problem = source, where, problem
        super().__init__(f"{source}: {where}: {problem}")


def load_policy(path: Path, hierarchy: ScopeHierarchy | None = None) -> Policy:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise PolicyError(str(path), "(file)", f"cannot be read ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(str(path), "(syntax)", f"not valid TOML: {exc}") from exc
    return parse_policy(data, source=str(path), hierarchy=hierarchy)


def _strings(value: Any, where: str, source: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(source, where, f"{key} must be a string or a list of strings")
    return tuple(value)


def compile_condition(expression: str, source: str, where: str) -> Condition:
    try:
        program = cel.compile(expression)
    except ValueError as exc:
        raise PolicyError(source, where, f"when is not valid CEL: {exc}") from None
    condition = Condition(expression, program)
    unknown = condition.variables - _VARIABLES
    if unknown:
        raise PolicyError(source, where, f"when uses unknown variables {sorted(unknown)}; "
                          f"known: {sorted(_VARIABLES)}")
    return condition


def _rule(raw: Mapping[str, Any], index: int, source: str) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(source, where, "a rule must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise PolicyError(source, where, f"unknown keys {sorted(unknown)}")
    rule_id = raw.get("id", f"rule-{index + 1}")
    if not isinstance(rule_id, str) or not rule_id:
        raise PolicyError(source, where, "id must be a non-empty string")
    where = f"rules[{index}] ({rule_id})"
    effect = raw.get("effect")
    if effect not in _EFFECTS:
        raise PolicyError(source, where, f"effect must be one of {', '.join(_EFFECTS)}")
    methods: set[str] = set()
    names: list[str] = []
    kinds = [k for k in _SHORTHAND if k in raw]
    if len(kinds) > 1:
        raise PolicyError(source, where, "give at most one of tools, prompts, resources")
    for kind in kinds:
        methods.update(_SHORTHAND[kind])
        names.extend(_strings(raw[kind], where, source, kind))
    if "methods" in raw:
        methods.update(_strings(raw["methods"], where, source, "methods"))
    if "names" in raw:
        names.extend(_strings(raw["names"], where, source, "names"))
    if not methods:
        raise PolicyError(source, where, "name what it applies to: tools, prompts, resources "
                          "or methods")
    when = raw.get("when")
    condition = None
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            raise PolicyError(source, where, "when must be a CEL expression string")
        condition = compile_condition(when, source, where)
    scopes: tuple[str, ...] = ()
    if effect == "require_scopes":
        try:
            scopes = tuple(sorted(parse_scopes(" ".join(
                _strings(raw.get("scopes"), where, source, "scopes")))))
        except ValueError as exc:
            raise PolicyError(source, where, str(exc)) from None
        if not scopes:
            raise PolicyError(source, where, "require_scopes needs scopes")
    elif "scopes" in raw:
        raise PolicyError(source, where, "scopes belongs only to require_scopes rules")
    message = raw.get("message", "")
    if not isinstance(message, str):
        raise PolicyError(source, where, "message must be a string")
    mounts = frozenset(_strings(raw["mounts"], where, source, "mounts")) if "mounts" in raw \
        else frozenset()
    return Rule(id=rule_id, effect=effect, methods=frozenset(methods), names=tuple(names),
                mounts=mounts, when=condition, scopes=scopes, message=message, index=index)


def parse_policy(data: Mapping[str, Any], *, source: str,
                 hierarchy: ScopeHierarchy | None = None) -> Policy:
    unknown = set(data) - {"rules", "tests"}
    if unknown:
        raise PolicyError(source, "(top level)", f"unknown keys {sorted(unknown)}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(source, "rules", "must be an array of tables ([[rules]])")
    rules = [_rule(r, i, source) for i, r in enumerate(raw_rules)]
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise PolicyError(source, f"rules ({r.id})", "rule ids must be unique")
        seen.add(r.id)
    return Policy(rules, hierarchy=hierarchy, source=source)
