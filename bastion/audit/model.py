"""What an audit event says: plain frozen data, turned into a JSON body by ``to_body``.

An event does not carry secrets by design: the gateway hands over the tool arguments only as an
``ArgumentDigest`` (a SHA-256 of their RFC 8785 form plus the few fields the configuration asks
to keep), and the redaction processor (``bastion.audit.redact``) still strips anything named
like a secret from whatever free-form data (``extra``, kept arguments, reasons) gets through.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from bastion.audit.rfc8785 import CanonicalizationError, canonicalize

__all__ = [
    "EVENT_KINDS",
    "Actor",
    "ArgumentDigest",
    "AuditEvent",
    "Decision",
    "EventKind",
    "Principal",
    "UpstreamOutcome",
    "digest_arguments",
    "format_time",
    "parse_time",
]

EventKind = Literal[
    # gateway
    "gateway.decision",       # allow / deny / step-up, with the deciding rule
    "gateway.upstream",       # the upstream outcome and latency of an allowed request
    "gateway.stdio_spawn",    # a stdio upstream started: the exact command (no environment)
    # authorization server
    "token.issued",
    "token.refreshed",
    "token.revoked",
    "token.exchanged",
    "token.reuse_detected",   # a used refresh token or code presented again; extra.what
    "login.succeeded",
    "login.failed",           # extra.username only for an existing account, else a keyed digest
    "consent.granted",
    "consent.denied",
    "consent.withdrawn",
    "client.registered",      # extra.via: "dcr" | "cimd" | "cli" | "config"
    "client.deleted",
    "user.created",
    "user.deleted",
    "keys.rotated",
    # operations
    "config.reloaded",
    "policy.reloaded",
    "audit.opened",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)

Decision = Literal["allow", "deny", "step-up"]
DECISIONS: tuple[str, ...] = get_args(Decision)

JsonValue = Any  # str | int | float | bool | None | list[JsonValue] | dict[str, JsonValue]


def format_time(epoch_seconds: float) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so text order is time order.

    The same text as ``datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds")``
    with ``Z`` for the offset (microseconds rounded half to even, as datetime does); the part
    up to the second is kept from the last call, since records come many to a second."""
    fraction, whole = math.modf(epoch_seconds)
    micros = round(fraction * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = int(whole)
    global _last_second
    cached_second, prefix = _last_second
    if second != cached_second:
        if not 0 <= second < _YEAR_10000:
            return _format_time_slow(epoch_seconds)
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _last_second = (second, prefix)
    return f"{prefix}{micros:06d}Z"


_YEAR_10000 = 253402300800  # 10000-01-01T00:00:00Z: past it %Y is no longer four digits
_last_second: tuple[int, str] = (-1, "")


def _format_time_slow(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    # isoformat with the offset cut: "2026-11-22T01:55:40.733641+00:00" -> "...733641Z"
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> float:
    """Read an RFC 3339 time (``Z`` or an offset; a bare date is midnight UTC) as epoch seconds."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Principal:
    iss: str
    sub: str

    def to_json(self) -> dict[str, JsonValue]:
        return {"iss": self.iss, "sub": self.sub}


@dataclass(frozen=True, slots=True)
class Actor:
    """One link of an RFC 8693 ``act`` chain, outermost (the current actor) first."""

    sub: str
    iss: str | None = None
    client_id: str | None = None

    def to_json(self) -> dict[str, JsonValue]:
        return _without_none({"sub": self.sub, "iss": self.iss, "client_id": self.client_id})


@dataclass(frozen=True, slots=True)
class ArgumentDigest:
    """``sha256``: hex SHA-256 of the RFC 8785 form of the arguments. ``kept``: the configured
    fields, by dotted path. ``canonical`` is False only when the arguments were not in the JSON
    data model (e.g. NaN); the digest is then over Python's sorted JSON and says so."""

    sha256: str
    kept: Mapping[str, JsonValue] = field(default_factory=dict)
    canonical: bool = True

    def to_json(self) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {"sha256": self.sha256}
        if self.kept:
            body["kept"] = dict(self.kept)
        if not self.canonical:
            body["canonical"] = False
        return body


def digest_arguments(arguments: object, keep: Iterable[str] = ()) -> ArgumentDigest:
    """Digest tool arguments: redacted by default, keeping only the named fields.

    ``keep`` holds dotted paths into nested objects (``"path"``, ``"options.mode"``); a path that
    is absent is left out. Kept values still pass through the secret redaction later.
    """
    try:
        encoded = canonicalize(arguments)
        canonical = True
    except CanonicalizationError:
        encoded = json.dumps(arguments, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False, default=repr).encode("utf-8", "surrogatepass")
        canonical = False
    kept: dict[str, JsonValue] = {}
    for path in keep:
        found, value = _lookup(arguments, path)
        if found and _json_safe(value):
            kept[path] = value
    return ArgumentDigest(hashlib.sha256(encoded).hexdigest(), kept, canonical)


def _lookup(value: object, path: str) -> tuple[bool, object]:
    current = value
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _json_safe(value: object) -> bool:
    try:
        canonicalize(value)
    except CanonicalizationError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class UpstreamOutcome:
    """``outcome``: "ok", "error" (a JSON-RPC or HTTP error), "timeout", "unavailable".
    Recorded as ``latency_us`` (integer microseconds)."""

    outcome: str
    latency_ms: float
    status: int | None = None       # HTTP status from the upstream, if any
    error_code: int | None = None   # JSON-RPC error code, if any

    def to_json(self) -> dict[str, JsonValue]:
        # whole microseconds: records hold no floats, so their canonical form is the C encoder's
        return _without_none({
            "outcome": self.outcome,
            "latency_us": round(self.latency_ms * 1000),
            "status": self.status,
            "error_code": self.error_code,
        })


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened. ``time`` is stamped by the log when left out."""

    kind: EventKind
    correlation_id: str | None = None
    principal: Principal | None = None
    client_id: str | None = None
    act: Sequence[Actor] = ()
    mount: str | None = None
    method: str | None = None
    tool: str | None = None          # tool, resource or prompt name
    arguments: ArgumentDigest | None = None
    decision: Decision | None = None
    rule: str | None = None
    reason: str | None = None
    upstream: UpstreamOutcome | None = None
    extra: Mapping[str, JsonValue] = field(default_factory=dict)
    time: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown audit event kind {self.kind!r}")
        if self.decision is not None and self.decision not in DECISIONS:
            raise ValueError(f"unknown decision {self.decision!r}")
        if self.time is not None and not math.isfinite(self.time):
            raise ValueError("event time must be finite")

    def to_body(self, now: float) -> dict[str, JsonValue]:
        """The JSON body of the record (before redaction and chaining); None fields left out."""
        body: dict[str, JsonValue] = {
            "time": format_time(self.time if self.time is not None else now),
            "kind": self.kind,
            "correlation_id": self.correlation_id,
            "principal": self.principal.to_json() if self.principal else None,
            "client_id": self.client_id,
            "act": [a.to_json() for a in self.act] if self.act else None,
            "mount": self.mount,
            "method": self.method,
            "tool": self.tool,
            "arguments": self.arguments.to_json() if self.arguments else None,
            "decision": self.decision,
            "rule": self.rule,
            "reason": self.reason,
            "upstream": self.upstream.to_json() if self.upstream else None,
            "extra": dict(self.extra) if self.extra else None,
        }
        return _without_none(body)


def _without_none(d: dict[str, JsonValue]) -> dict[str, JsonValue]:
    return {k: v for k, v in d.items() if v is not None}
