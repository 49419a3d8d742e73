"""Suite-wide: every secret the in-process authorization server issues during the run (access
tokens, refresh tokens, codes, client secrets, session ids) is remembered, every log record is
captured, and at the end of the run neither the log records nor any audit store the run wrote
may contain one of them (issue 6: "a scan of every record and log line produced by a full
test run")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import bastion.server.context as _context
import bastion.server.tokens as _tokens

ISSUED: set[str] = set()
LINES: list[str] = []


def _remember_new_secret(original: Any) -> Any:
    def new_secret() -> str:
        value: str = original()
        ISSUED.add(value)
        return value
    return new_secret


def _remember_tokens(original: Any) -> Any:
    def mint_access_token(*args: Any, **kwargs: Any) -> Any:
        token, claims = original(*args, **kwargs)
        ISSUED.add(token)
        ISSUED.add(token.rsplit(".", 1)[-1])  # the signature alone is a secret too
        return token, claims
    return mint_access_token


# Patched before any module imports these names (conftest loads first).
_context.new_secret = _remember_new_secret(_context.new_secret)
_tokens.mint_access_token = _remember_tokens(_tokens.mint_access_token)


class _Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            LINES.append(self.format(record))
        except Exception:  # a record that cannot be formatted is not a leak
            LINES.append(str(record.msg))


_handler = _Capture(level=logging.DEBUG)
logging.getLogger().addHandler(_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    secrets = {s for s in ISSUED if len(s) >= 16}
    if not secrets:
        return
    leaks = [line[:200] for line in LINES if any(s in line for s in secrets)]
    base = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    stores = [p for p in Path(base).rglob("audit*") if p.is_file()] if Path(base).exists() else []
    leaked_files = []
    for path in stores:
        data = path.read_bytes()
        if any(s.encode() in data for s in secrets):
            leaked_files.append(str(path))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"secret scan: {len(secrets)} issued secrets, {len(LINES)} log records, "
            f"{len(stores)} audit files scanned; leaks: {len(leaks) + len(leaked_files)}")
    if leaks or leaked_files:
        if reporter is not None:
            for item in leaks[:10] + leaked_files[:10]:
                reporter.write_line(f"  LEAK: {item}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
