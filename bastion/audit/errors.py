"""Audit errors. ``AuditUnavailable`` is what a caller sees in fail-closed mode when a record
could not be made durable: the request must then be refused (invariant 4)."""

from __future__ import annotations

from bastion.errors import BastionError

__all__ = ["AuditError", "AuditStoreBusy", "AuditUnavailable"]


class AuditError(BastionError):
    """Base of the audit errors."""


class AuditUnavailable(AuditError):
    """The audit record could not be written; refuse the request (HTTP 503)."""

    status = 503

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(f"audit log unavailable: {description}")


class AuditStoreBusy(AuditError):
    """The audit store's write lock stayed held by someone else (another process, a stuck
    transaction), or the store did not answer, for longer than the bounded wait a batch is
    given. Raised by a sink; the log turns it into ``AuditUnavailable`` for each waiter."""

    def __init__(self, where: str, waited: float, what: str) -> None:
        self.where, self.waited, self.what = where, waited, what
        super().__init__(f"{where}: {what} for {waited:.1f} s")
