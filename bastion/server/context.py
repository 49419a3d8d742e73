"""What every endpoint of the built-in authorization server shares: configuration, storage,
keys, the clock, the client registry and the table of protected resources."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field

from bastion.audit import AuditLog
from bastion.clock import Clock
from bastion.config.model import BastionConfig, MountConfig
from bastion.keys import SigningKeys
from bastion.server.clients import ClientRegistry
from bastion.storage.base import Store

__all__ = ["AuthorizationServer", "ResourceInfo", "new_secret", "resource_table"]

OFFLINE_ACCESS = "offline_access"
PENDING_LIFETIME_SECONDS = 600.0
SESSION_LIFETIME_SECONDS = 8 * 3600.0


def new_secret() -> str:
    """256 bits, URL-safe: codes, refresh tokens, request ids, CSRF tokens, session ids."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    resource: str
    name: str
    # Every scope the resource knows of, plus the AS's own and offline_access.
    scopes: frozenset[str]
    # What a request without ``scope`` gets: the mount's base scopes.
    default_scopes: tuple[str, ...]


def _mount_scopes(m: MountConfig) -> set[str]:
    out = set(m.scopes)
    for table in (m.tool_scopes, m.resource_scopes, m.prompt_scopes):
        for values in table.values():
            out.update(values)
    if m.policy is not None:
        # Scopes the mount's policy can ask for in a step-up must be grantable here.
        from bastion.policy import PolicyError, load_policy

        # A bad policy is reported by the gateway, which then refuses to start.
        with contextlib.suppress(PolicyError):
            out.update(load_policy(m.policy).scopes())
    return out


def resource_table(config: BastionConfig) -> dict[str, ResourceInfo]:
    """Non-public mounts that trust the built-in issuer, by canonical resource identifier."""
    extra = set(config.authorization_server.scopes) | {OFFLINE_ACCESS}
    table: dict[str, ResourceInfo] = {}
    for m in config.mounts:
        if m.public or "builtin" not in m.issuers:
            continue
        resource = config.resource_for(m)
        table[resource] = ResourceInfo(
            resource=resource,
            name=m.resource_name or m.name,
            scopes=frozenset(_mount_scopes(m) | extra),
            default_scopes=tuple(m.scopes),
        )
    return table


@dataclass(slots=True)
class AuthorizationServer:
    config: BastionConfig
    store: Store
    keys: SigningKeys
    clock: Clock
    clients: ClientRegistry
    resources: dict[str, ResourceInfo] = field(default_factory=dict)
    # The audit trail (issue 6); None when auditing is off.
    audit: AuditLog | None = None
    # Keys the digest a failed login records for a name that is no account (it may be a
    # password typed in the wrong field): per process, never stored, so the digest cannot
    # be tested against guesses offline.
    login_digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def endpoint(self, name: str) -> str:
        return self.issuer.rstrip("/") + "/" + name

    def all_scopes(self) -> list[str]:
        out: set[str] = set(self.config.authorization_server.scopes) | {OFFLINE_ACCESS}
        for info in self.resources.values():
            out |= info.scopes
        return sorted(out)

    def scopes_for(self, resource: str) -> frozenset[str]:
        info = self.resources.get(resource)
        return info.scopes if info else frozenset()

    @staticmethod
    def client_scope_limit(client_scope: str | None) -> frozenset[str] | None:
        if client_scope is None:
            return None
        return frozenset(s for s in client_scope.split(" ") if s)
