"""Processors: plain functions ``body -> body`` applied in order before a record is chained.

As in structlog, the log is an ordered chain of processors ending in a sink
(``AuditLog(processors=...)``); ``DEFAULT_PROCESSORS`` holds the one that is always wanted:
``redact_secrets``.

Redaction works by construction, not by the caller's care: every member whose *name* looks like
a secret (tokens, codes, verifiers, client secrets, passwords, ``Authorization``, assertions,
cookies, API keys, upstream credentials, private keys) is removed wherever it sits, and strings
are scrubbed of the shapes secrets take inside text (``Bearer …``, JWTs, ``name=value`` pairs
with a secret-like name, as in command lines and query strings, and ``user:password@`` in URLs).
The body records which member paths were removed under ``redacted`` (names only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "DEFAULT_PROCESSORS",
    "REDACTED",
    "Processor",
    "drop_fields",
    "is_secret_name",
    "redact_secrets",
    "scrub_text",
]

Processor = Callable[[dict[str, Any]], dict[str, Any]]
REDACTED = "[redacted]"

# Exact names (lower case, '-' read as '_').
_SECRET_NAMES = frozenset({
    "token", "access_token", "refresh_token", "id_token", "subject_token", "actor_token",
    "device_code", "user_code", "code", "code_verifier", "client_secret", "secret",
    "password", "passwd", "pwd", "passphrase", "authorization", "proxy_authorization",
    "assertion", "client_assertion", "cookie", "set_cookie", "api_key", "apikey", "x_api_key",
    "private_key", "credential", "credentials", "bearer", "session_id", "mcp_session_id",
    "csrf_token", "state", "nonce", "jwt", "otp", "pin",
})
# Any name containing one of these (after normalisation).
_SECRET_PARTS = ("secret", "password", "passwd", "credential", "private_key", "api_key",
                 "apikey", "authorization", "cookie", "assertion")
# Any name ending with one of these.
_SECRET_SUFFIXES = ("_token", "token", "_code", "_verifier", "_key", "_pwd")
# Names that match the rules above but name no secret.
_ALLOWED_NAMES = frozenset({
    "token_type", "token_endpoint_auth_method", "token_use", "kid", "public_key",
    "error_code", "status_code", "exit_code", "key_id", "tokens_issued",
})

_BEARER = re.compile(r"(?i)\b(bearer|basic|dpop)\s+[A-Za-z0-9\-._~+/]+=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_NAME = r"[A-Za-z0-9_.\-]*"
_SECRETISH = (r"(?:token|secret|password|passwd|pwd|api[_-]?key|credential|assertion|"
              r"code_verifier|authorization|cookie)")
_VALUE = r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s&\"',;]+)"
# name=value, name: value (query strings, headers, environment-style text)
_PAIR = re.compile(rf"(?i)(?P<name>{_NAME}{_SECRETISH}|\bcode)(?P<sep>\s*[=:]\s*){_VALUE}")
# --name value (command lines)
_FLAG = re.compile(rf"(?i)(?P<name>(?<![\w-])--?{_NAME}{_SECRETISH}{_NAME})(?P<sep>\s+){_VALUE}")
_BARE_FLAG = re.compile(rf"(?i)--?{_NAME}{_SECRETISH}{_NAME}")
# Words whose presence (in lower-cased text) lets a pattern below match: text that holds none
# of them skips that pattern. Most audit strings (ids, names, URLs) skip all of them.
_SECRET_WORDS = re.compile(
    "token|secret|passw|pwd|api.?key|credential|assertion|code|authorization|cookie")
_SCHEME_WORDS = re.compile("bearer|basic|dpop")
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    n = _normalise(name)
    if n in _ALLOWED_NAMES:
        return False
    if n in _SECRET_NAMES:
        return True
    if any(part in n for part in _SECRET_PARTS):
        return True
    return n.endswith(_SECRET_SUFFIXES)


def scrub_text(text: str) -> str:
    """Replace the secret-shaped parts of free text."""
    low = text.lower()
    if "@" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
    if _SCHEME_WORDS.search(low):
        text = _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
    if "eyj" in low:
        text = _JWT.sub(REDACTED, text)
    if _SECRET_WORDS.search(low):

        def keep_name(m: re.Match[str]) -> str:
            return m.group("name") + m.group("sep") + REDACTED

        text = _FLAG.sub(keep_name, _PAIR.sub(keep_name, text))
    return text


def _clean(value: Any, path: str, removed: list[str]) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and is_secret_name(key):
                removed.append(where)
                continue
            out[scrub_text(key) if isinstance(key, str) else key] = _clean(item, where, removed)
        return out
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        items: list[Any] = []
        for i, item in enumerate(value):
            # argv: ["--api-key", "XYZ"] keeps the flag and drops the value after it
            previous = value[i - 1] if i else None
            if isinstance(previous, str) and _BARE_FLAG.fullmatch(previous):
                items.append(REDACTED)
            else:
                items.append(_clean(item, f"{path}[{i}]", removed))
        return items
    return value


# Members of ``AuditEvent.to_body`` that hold identifiers the code sets from validated protocol
# values (never free text): passed through as they are. Everything else (``reason``,
# ``extra``, ``arguments.kept``, ``act``, members added by other processors) is cleaned.
_TYPED_MEMBERS = frozenset({
    "time", "kind", "correlation_id", "principal", "client_id", "mount", "method", "tool",
    "decision", "rule", "upstream",
})


def redact_secrets(body: dict[str, Any]) -> dict[str, Any]:
    """Remove secret-named members anywhere in the body and scrub secret shapes from strings.

    The digest under ``arguments.sha256`` is kept: it is a hash, not the arguments.
    """
    removed: list[str] = []
    cleaned: dict[str, Any] = {}
    for key, value in body.items():
        if key in _TYPED_MEMBERS:
            cleaned[key] = value
        elif is_secret_name(key):
            removed.append(key)
        else:
            cleaned[scrub_text(key)] = _clean(value, key, removed)
    if removed:
        cleaned["redacted"] = sorted(set(removed) | set(cleaned.get("redacted", ())))
    return cleaned


def drop_fields(*names: str) -> Processor:
    """A processor that removes the named top-level members (e.g. to leave ``extra`` out)."""
    dropped = frozenset(names)

    def process(body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in dropped}

    return process


DEFAULT_PROCESSORS: tuple[Processor, ...] = (redact_secrets,)
