"""Drive the official MCP conformance suite (``conformance server``) against a URL on loopback.

The suite is the npm package ``@modelcontextprotocol/conformance`` pinned in
``tools/package.json`` and installed by ``scripts/bootstrap.sh --node`` into
``tools/node_modules`` (with Node 22, which the suite needs). Results are read from the
per-scenario ``checks.json`` files the harness writes with ``-o DIR``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "BASELINE",
    "CONFORMANCE_VERSION",
    "SuiteRun",
    "expected_failures",
    "fixture_server",
    "list_server_scenarios",
    "require_node_tools",
    "run_conformance",
    "run_suite",
]

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / "tools" / "node_modules" / ".bin"
CONFORMANCE = TOOLS_BIN / "conformance"
NODE = TOOLS_BIN / "node"
BASELINE = Path(__file__).resolve().parent / "server-baseline.yml"
CONFORMANCE_VERSION = "0.2.0-alpha.12"

# Bounds, so that a broken server or gateway fails the test instead of hanging it.
SCENARIO_TIMEOUT_MS = 15_000  # per scenario, passed to the harness (its default is 30 s)
SUITE_TIMEOUT_S = 90.0  # the whole `conformance server` run
LIST_TIMEOUT_S = 30.0
FIXTURE_START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0

PASS, FAIL = "pass", "fail"
_FAILING_STATUSES = frozenset({"FAILURE", "WARNING"})  # WARNING fails the harness's exit code too
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def require_node_tools() -> None:
    """Skip when the Node tools are not installed; fail instead on CI (``CI=true``)."""
    missing = [p for p in (NODE, CONFORMANCE) if not p.exists()]
    if not missing:
        return
    reason = (f"Node tools missing ({', '.join(os.path.relpath(p, ROOT) for p in missing)}); "
              "install them with scripts/bootstrap.sh --node")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: the conformance suite must run)")
    pytest.skip(reason)


def tool_env() -> dict[str, str]:
    """The environment for the Node tools: the project's Node 22 first on PATH."""
    return {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "NO_COLOR": "1"}


@dataclass(frozen=True)
class SuiteRun:
    """One ``conformance server`` run: exit code, scenario outcomes, console output."""

    returncode: int
    outcomes: dict[str, str]  # scenario -> "pass" | "fail"
    failed_checks: dict[str, list[str]]  # scenario -> "check-id: STATUS: message"
    output: str
    seconds: float

    def failing(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome == FAIL}


def run_conformance(url: str, *, expected_failures: Path | None = BASELINE,
                    suite: str = "all", extra_args: tuple[str, ...] = ()) -> SuiteRun:
    """Run the server suite against ``url``; never blocks longer than ``SUITE_TIMEOUT_S``."""
    with tempfile.TemporaryDirectory(prefix="conformance-") as out:
        cmd = [str(CONFORMANCE), "server", "--url", url, "--suite", suite, "-o", out,
               "--timeout", str(SCENARIO_TIMEOUT_MS), *extra_args]
        if expected_failures is not None:
            cmd += ["--expected-failures", str(expected_failures)]
        started = time.monotonic()
        returncode, output = _run_bounded(cmd, SUITE_TIMEOUT_S)
        seconds = time.monotonic() - started
        outcomes, failed_checks = read_results(Path(out))
    return SuiteRun(returncode, outcomes, failed_checks, output, seconds)


def run_suite(url: str) -> dict[str, str]:
    """Scenario -> outcome ("pass"/"fail") of the whole server suite against ``url``.

    Run without the baseline, so the outcomes of two targets (direct, through the gateway)
    can be compared as they are.
    """
    return run_conformance(url, expected_failures=None).outcomes


def read_results(out: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per-scenario outcomes from ``out/server-<scenario>-<timestamp>/checks.json``.

    A scenario whose directory has no ``checks.json`` threw inside the harness; the harness
    counts that as a failure of the whole scenario, and so does this.
    """
    outcomes: dict[str, str] = {}
    failed: dict[str, list[str]] = {}
    for result_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        match = _RESULT_DIR.match(result_dir.name)
        if match is None:
            continue
        scenario = match["scenario"]
        checks_file = result_dir / "checks.json"
        if not checks_file.exists():
            outcomes[scenario] = FAIL
            failed[scenario] = ["(no checks.json: the scenario threw)"]
            continue
        checks = json.loads(checks_file.read_text())
        bad = [f"{c.get('id')}: {c.get('status')}: {c.get('errorMessage') or ''}".rstrip(": ")
               for c in checks if c.get("status") in _FAILING_STATUSES]
        outcomes[scenario] = FAIL if bad else PASS
        if bad:
            failed[scenario] = bad
    return outcomes, failed


def list_server_scenarios() -> set[str]:
    """Every server scenario this version of the suite knows (``conformance list --server``)."""
    _, output = _run_bounded([str(CONFORMANCE), "list", "--server"], LIST_TIMEOUT_S)
    return set(re.findall(r"^\s+- (\S+)", output, re.MULTILINE))


def expected_failures(baseline: Path = BASELINE) -> set[str]:
    """The entries of a baseline file (the YAML subset it uses: `server:` then `- name`)."""
    entries: set[str] = set()
    section = None
    for raw in baseline.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith((" ", "-")):
            section = line.rstrip(":").strip()
        elif section == "server" and line.strip().startswith("- "):
            entries.add(line.strip()[2:].strip())
    return entries


def _run_bounded(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and fail."""
    with subprocess.Popen(cmd, cwd=ROOT, env=tool_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            output, _ = proc.communicate()
            pytest.fail(f"{' '.join(cmd[:2])} did not finish within {timeout:.0f} s:\n"
                        + _ANSI.sub("", output or "")[-4000:])
    return proc.returncode, _ANSI.sub("", output)


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- the fixture server in a subprocess ---------------------------------------------------------

@contextlib.contextmanager
def fixture_server(port: int, *, log: Path, args: tuple[str, ...] = (),
                   env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run ``tests.fixtures.conformance_server`` on 127.0.0.1:port; yield its MCP URL."""
    cmd = [sys.executable, "-m", "tests.fixtures.conformance_server", "--port", str(port), *args]
    with log.open("wb") as sink, subprocess.Popen(
            cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}) as proc:
        try:
            _wait_listening(proc, port, log)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(STOP_TIMEOUT_S)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + FIXTURE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fixture server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"fixture server not listening on {port} after {FIXTURE_START_TIMEOUT_S} s:\n"
                + log.read_text()[-4000:])
