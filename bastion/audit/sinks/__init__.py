"""Where audit records are kept: SQLite (default), PostgreSQL, a JSONL file."""

from bastion.audit.sinks.base import AuditSink, SealedBatch, Sealer
from bastion.audit.sinks.jsonl import JsonlSink
from bastion.audit.sinks.sqlite import SqliteAuditSink

__all__ = ["AuditSink", "JsonlSink", "SealedBatch", "Sealer", "SqliteAuditSink"]
