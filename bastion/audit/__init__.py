"""Audit: a tamper-evident, signed, hash-chained record of every decision.

Pure core (no I/O): ``rfc8785`` (canonical JSON), ``model`` (events), ``redact`` (processors),
``chain`` (sealing), ``checkpoint`` (signed heads), ``verify``. At the edge: ``log.AuditLog``
(group commit into a sink), ``sinks`` (SQLite, PostgreSQL, JSONL), ``export``.

Typical use::

    log = await open_audit_log(data_dir, storage_url=config.storage_url, writer="gw-1")
    await log.append(AuditEvent("gateway.decision", correlation_id=rid, principal=..., ...))
    await log.close()
"""

from bastion.audit.chain import GENESIS_HASH, ChainHead, record_hash
from bastion.audit.checkpoint import Checkpoint
from bastion.audit.errors import AuditError, AuditUnavailable
from bastion.audit.keys import AuditSigner, load_public_keys
from bastion.audit.log import AuditLog, AuditMode, default_writer_id, open_audit_log, open_sink
from bastion.audit.model import (
    EVENT_KINDS,
    Actor,
    ArgumentDigest,
    AuditEvent,
    Decision,
    EventKind,
    Principal,
    UpstreamOutcome,
    digest_arguments,
)
from bastion.audit.redact import DEFAULT_PROCESSORS, Processor, redact_secrets
from bastion.audit.verify import Problem, Report, verify

__all__ = [
    "DEFAULT_PROCESSORS",
    "EVENT_KINDS",
    "GENESIS_HASH",
    "Actor",
    "ArgumentDigest",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditMode",
    "AuditSigner",
    "AuditUnavailable",
    "ChainHead",
    "Checkpoint",
    "Decision",
    "EventKind",
    "Principal",
    "Problem",
    "Processor",
    "Report",
    "UpstreamOutcome",
    "default_writer_id",
    "digest_arguments",
    "load_public_keys",
    "open_audit_log",
    "open_sink",
    "record_hash",
    "redact_secrets",
    "verify",
]
