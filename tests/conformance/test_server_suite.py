"""The official MCP conformance suite's server scenarios, against our fixture server.

``conformance server --suite all`` (0.2.0-alpha.12) runs every server scenario: both protocol
eras, SSE polling/resumability, sampling and elicitation on the POST stream, DNS-rebinding
protection, the 2026-07-28 stateless wire and input-required results. Expected failures, each
with its reason, are in ``server-baseline.yml``; the harness exits non-zero on an unexpected
failure and on a stale baseline entry alike.

``run_suite(url)`` is the reusable part: the same suite can be pointed at the gateway in front
of this fixture and its outcomes compared with ``direct_outcomes``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import (
    BASELINE,
    SuiteRun,
    _wait_listening,
    expected_failures,
    fixture_server,
    list_server_scenarios,
    require_node_tools,
    run_conformance,
)
from tests.support import free_port

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def fixture_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fixture server's MCP endpoint, direct (no gateway): http://127.0.0.1:PORT/mcp."""
    require_node_tools()
    log = tmp_path_factory.mktemp("conformance-fixture") / "server.log"
    with fixture_server(free_port(), log=log) as url:
        yield url


@pytest.fixture(scope="module")
def direct_run(fixture_url: str) -> SuiteRun:
    """One baseline-checked run of the whole suite against the fixture, shared by the tests."""
    return run_conformance(fixture_url)


def _explain(run: SuiteRun) -> str:
    lines = [f"conformance server exited {run.returncode} after {run.seconds:.1f} s"]
    for scenario, checks in sorted(run.failed_checks.items()):
        lines.append(f"  {scenario}:")
        lines += [f"      {check[:300]}" for check in checks]
    tail = run.output[run.output.find("Total:"):] if "Total:" in run.output else run.output[-3000:]
    return "\n".join([*lines, "", tail])


def test_suite_passes_with_baseline(direct_run: SuiteRun) -> None:
    assert direct_run.returncode == 0, _explain(direct_run)


def test_outcomes_match_baseline_exactly(direct_run: SuiteRun) -> None:
    """Every scenario ran and only the baselined ones failed (the harness's verdict, per name)."""
    assert set(direct_run.outcomes) == list_server_scenarios(), "scenarios missing from the run"
    assert direct_run.failing() == expected_failures(BASELINE), _explain(direct_run)


def test_baseline_has_a_reason_for_every_entry() -> None:
    """Each expected failure is explained by a comment above it (its block's comment)."""
    lines = Path(BASELINE).read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if line.strip().startswith("- ")]
    for index in entries:
        block = lines[:index]
        while block and block[-1].strip().startswith("- "):
            block.pop()
        assert block and block[-1].strip().startswith("#"), f"no reason for {lines[index]!r}"


# --- the same suite through the gateway, on a public mount ------------------------------------


@contextlib.contextmanager
def gateway_in_front(upstream: str, tmp: Path) -> Iterator[str]:
    """``bastion serve`` (a real process) with one public mount in front of ``upstream``."""
    port = free_port()
    config = tmp / "bastion.toml"
    config.write_text(
        f'data_dir = "{tmp / "data"}"\n[server]\nport = {port}\n'
        "[authorization_server]\nenabled = false\n"
        '[[mounts]]\nname = "conformance"\npath = "/mcp"\npublic = true\n'
        f'[mounts.upstream]\nurl = "{upstream}"\n')
    log = tmp / "gateway.log"
    with log.open("wb") as sink, subprocess.Popen(
            [sys.executable, "-m", "bastion.cli.main", "serve", "--config", str(config),
             "--log-level", "warning"],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True) as proc:
        try:
            _wait_listening(proc, port, log)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_suite_through_the_gateway_matches_the_direct_run(
    direct_run: SuiteRun, fixture_url: str, tmp_path: Path
) -> None:
    with gateway_in_front(fixture_url, tmp_path) as url:
        through = run_conformance(url)
    assert through.outcomes == direct_run.outcomes, _explain(through)
    assert through.returncode == 0, _explain(through)
