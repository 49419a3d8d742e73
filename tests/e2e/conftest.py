from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
