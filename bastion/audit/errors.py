"""Audit errors. ``AuditUnavailable`` is what a caller sees in fail-closed mode when a record
could not be made durable: the request must then be refused (invariant 4)."""

from __future__ import annotations

from bastion.errors import BastionError

__all__ = ["AuditError", "AuditUnavailable"]


class AuditError(BastionError):
    """Base of the audit errors."""


class AuditUnavailable(AuditError):
    """The audit record could not be written; refuse the request (HTTP 503)."""

    status = 503

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"audit log unavailable: {description}")
