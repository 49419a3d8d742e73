"""What a rule may look at: principal, action, arguments and context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bastion.principal import Principal

__all__ = ["Facts"]


@dataclass(frozen=True, slots=True)
class Facts:
    principal: Principal
    mount: str
    method: str
    name: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    client_address: str = ""
    era: str = ""
    time: float = 0.0
    # Token claims a rule may see (configured per policy, e.g. groups or roles).
    claims: Mapping[str, Any] = field(default_factory=dict)

    def variables(self, names: frozenset[str]) -> dict[str, Any]:
        """Only the CEL variables a program references are built."""
        out: dict[str, Any] = {}
        if "principal" in names:
            p = self.principal
            out["principal"] = {
                "iss": p.issuer, "sub": p.subject, "client_id": p.client_id,
                "scopes": sorted(p.scopes), "claims": dict(self.claims),
                "act": [dict(a) for a in p.act],
            }
        if "action" in names:
            out["action"] = {"mount": self.mount, "method": self.method,
                             "name": self.name or ""}
        if "args" in names:
            out["args"] = dict(self.arguments)
        if "context" in names:
            out["context"] = {"time": self.time, "client_address": self.client_address,
                              "era": self.era}
        return out
