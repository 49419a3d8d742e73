from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import free_port


@dataclass
class Demo:
    endpoint: str
    username: str
    password: str
    base: str
    data: Path
    process: subprocess.Popen[str]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """``bastion demo`` as the README's first command runs it: a real process on loopback."""
    port = free_port()
    data = tmp_path / "data"
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", "demo", "--port", str(port),
         "--data", str(data)],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert lines[0].startswith("MCP endpoint: "), lines
        assert lines[1].startswith("Demo login: "), lines
        endpoint = lines[0].removeprefix("MCP endpoint: ")
        user, password = lines[1].removeprefix("Demo login: ").split(" / ")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("bastion demo did not come up: "
                                     + (tmp_path / "demo.log").read_text())
            time.sleep(0.1)
        yield Demo(endpoint, user, password, base, data, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "node_modules"
JS = REPO / "tests" / "js"
CHROMIUM = Path("/usr/bin/chromium")


def missing(reason: str) -> None:
    """Skip for a missing tool on a developer machine; in CI (``CI=true``) it is a failure,
    because scripts/bootstrap.sh was supposed to install it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: run scripts/bootstrap.sh --all)")
    pytest.skip(reason)


@pytest.fixture
def node() -> Path:
    """Node 22 from tools/node_modules (scripts/bootstrap.sh --node)."""
    binary = TOOLS / ".bin" / "node"
    if not binary.exists():
        missing(f"Node 22 is not installed at {binary} (scripts/bootstrap.sh --node)")
    return binary


def require_package(name: str) -> None:
    if not (TOOLS / name / "package.json").exists():
        missing(f"npm package {name} is not installed in {TOOLS} (scripts/bootstrap.sh --node)")


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium (scripts/bootstrap.sh --browser); Playwright never downloads one."""
    if not CHROMIUM.exists():
        missing(f"Debian chromium is not installed at {CHROMIUM} "
                "(scripts/bootstrap.sh --browser)")
    return CHROMIUM


@pytest.fixture
def artifacts() -> Path:
    """test-artifacts/ at the repository root, kept after the run (scripts/test.sh makes it)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


def run_node_script(node: Path, script: str, payload: dict[str, Any], *,
                    timeout: float) -> dict[str, Any]:
    """Run tests/js/<script> with one JSON argument; return the JSON line it prints last."""
    try:
        done = subprocess.run([str(node), str(JS / script), json.dumps(payload)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{script} did not finish in {timeout} s: "
                             f"stdout={exc.stdout!r} stderr={exc.stderr!r}") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"{script} printed no result (exit {done.returncode}): "
                             f"stdout={done.stdout[-2000:]!r} stderr={done.stderr[-2000:]!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["_exit"] = done.returncode
    result["_stderr"] = done.stderr[-4000:]
    return result
