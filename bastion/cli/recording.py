"""What a command changes in the authorization server's state (users, clients, consents,
keys) goes into the audit trail first: a change that cannot be recorded does not happen
(invariant 4). With auditing off in the configuration, nothing is recorded.

``bastion.audit`` is imported only when something is recorded: it costs about 100 ms, and
every ``bastion`` command loads this module to build its argument parser.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bastion.config.model import BastionConfig
from bastion.errors import BastionError

if TYPE_CHECKING:
    from bastion.audit.model import EventKind

__all__ = ["Change", "NotRecorded", "record_first", "refused"]


class NotRecorded(BastionError):
    """The audit trail could not record a change, so the change was not made."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: EventKind
    subject: str | None = None  # a user of the built-in issuer
    client_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


async def record_first(config: BastionConfig, *changes: Change) -> None:
    """Append one record per change and close the log; ``NotRecorded`` when the audit store
    cannot be opened or a record cannot be written (fail-closed mode)."""
    if not config.audit.enabled or not changes:
        return
    from bastion.audit import AuditEvent, AuditUnavailable, Principal, open_audit_log

    try:
        log = await open_audit_log(config.data_dir, storage_url=config.storage_url,
                                   writer=config.audit.writer, mode=config.audit.mode,
                                   announce=False)
        try:
            for change in changes:
                principal = Principal(config.issuer, change.subject) if change.subject else None
                await log.append(AuditEvent(change.kind, principal=principal,
                                            client_id=change.client_id,
                                            extra={k: v for k, v in change.extra.items()
                                                   if v is not None}))
        finally:
            await log.close()
    except AuditUnavailable as exc:
        raise NotRecorded(exc.description) from exc


def refused(command: str, exc: NotRecorded) -> int:
    """Say why nothing was changed; the exit status of a command refused this way."""
    print(f"{command}: nothing was changed, the audit trail cannot record it ({exc})",
          file=sys.stderr)
    return 1
