"""Scope strings (RFC 6749 §3.3) and scope hierarchies (MCP: a broader scope implies narrower)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["ScopeHierarchy", "format_scopes", "parse_scopes"]

_SCOPE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


def parse_scopes(value: str | None) -> frozenset[str]:
    """Split a space-delimited scope string; reject characters RFC 6749 forbids."""
    if not value:
        return frozenset()
    scopes = frozenset(s for s in value.split(" ") if s)
    for s in scopes:
        if not set(s) <= _SCOPE_CHARS:
            raise ValueError(f"invalid character in scope {s!r}")
    return scopes


def format_scopes(scopes: Iterable[str]) -> str:
    return " ".join(sorted(set(scopes)))


class ScopeHierarchy:
    """``implies = {"files:admin": ["files:write"], "files:write": ["files:read"]}``.

    Closure is computed once at start-up; checks are set operations.
    """

    def __init__(self, implies: Mapping[str, Iterable[str]] | None = None) -> None:
        direct = {k: set(v) for k, v in (implies or {}).items()}
        closure: dict[str, frozenset[str]] = {}
        for root in direct:
            seen: set[str] = set()
            stack = list(direct[root])
            while stack:
                s = stack.pop()
                if s not in seen:
                    seen.add(s)
                    stack.extend(direct.get(s, ()))
            closure[root] = frozenset(seen)
        self._closure = closure

    def expand(self, granted: Iterable[str]) -> frozenset[str]:
        out = set(granted)
        for s in list(out):
            out |= self._closure.get(s, frozenset())
        return frozenset(out)

    def missing(self, granted: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
        """Every required scope the grant does not cover, sorted (RS-15: all in one)."""
        have = self.expand(granted)
        return tuple(sorted(set(required) - have))
