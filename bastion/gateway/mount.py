"""A mount as the request path sees it: everything computed once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.oauth.scopes import ScopeHierarchy
from bastion.policy import Policy
from bastion.policy.ratelimit import RateLimit

__all__ = ["Mount", "PolicyHolder", "ScopeRules"]


@dataclass(frozen=True)
class ScopeRules:
    """Scopes per operation: the mount's base scopes plus per-name extras (``*`` = others)."""

    base: tuple[str, ...] = ()
    tools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    resources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prompts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hierarchy: ScopeHierarchy = field(default_factory=ScopeHierarchy)

    def _table(self, method: str | None) -> dict[str, tuple[str, ...]] | None:
        if method in ("tools/call", "tools/list"):
            return self.tools
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe",
                      "resources/list", "resources/templates/list"):
            return self.resources
        if method in ("prompts/get", "prompts/list"):
            return self.prompts
        return None

    def required(self, method: str | None, name: str | None) -> tuple[str, ...]:
        needed = set(self.base)
        table = self._table(method)
        if table is not None and name is not None:
            needed.update(table.get(name, table.get("*", ())))
        return tuple(sorted(needed))

    def all_scopes(self) -> tuple[str, ...]:
        out = set(self.base)
        for table in (self.tools, self.resources, self.prompts):
            for scopes in table.values():
                out.update(scopes)
        return tuple(sorted(out))


class PolicyHolder:
    """The policy in force for a mount; a reload swaps it in one assignment (atomic)."""

    def __init__(self, policy: Policy) -> None:
        self.current = policy


@dataclass(frozen=True)
class Mount:
    name: str
    path: str
    resource: str
    resource_metadata_url: str
    public: bool
    issuers: tuple[str, ...]
    scopes: ScopeRules
    policy: PolicyHolder | None = None
    rate_limits: tuple[RateLimit, ...] = ()
    # Tool-argument fields the audit trail keeps in the clear (the rest is a digest).
    audit_keep_arguments: tuple[str, ...] = ()
