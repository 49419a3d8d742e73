"""``bastion serve``'s server stack: uvloop and httptools when they import, asyncio and h11
otherwise or when the configuration says so; a stack named but missing is a clear error."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bastion.cli.serve import ServerStack, server_stack
from bastion.config.model import ServerConfig
from bastion.errors import ConfigError
from tests.support import free_port

pytestmark = pytest.mark.timeout(120)


def test_auto_takes_the_c_speedups_when_they_import() -> None:
    assert server_stack(ServerConfig(), importable=lambda name: True) == \
        ServerStack("uvloop", "httptools")


def test_auto_falls_back_to_asyncio_and_h11() -> None:
    assert server_stack(ServerConfig(), importable=lambda name: False) == \
        ServerStack("asyncio", "h11")


def test_the_standard_stack_can_be_chosen() -> None:
    cfg = ServerConfig(event_loop="asyncio", http_parser="h11")
    assert server_stack(cfg, importable=lambda name: True) == ServerStack("asyncio", "h11")


@pytest.mark.parametrize(("key", "missing"), [("event_loop", "uvloop"),
                                              ("http_parser", "httptools")])
def test_a_named_stack_that_is_not_installed_is_a_configuration_error(
        key: str, missing: str) -> None:
    cfg = ServerConfig(**{key: missing})  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        server_stack(cfg, "bastion.toml", importable=lambda name: name != missing)
    assert caught.value.key == f"server.{key}"
    assert f"{missing} is not installed" in str(caught.value)


def test_an_unknown_stack_is_refused_by_the_configuration() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        ServerConfig(event_loop="trio")  # type: ignore[arg-type]


def _config(tmp_path: Path, port: int, server_extra: str) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[server]\nport = {port}\n{server_extra}"
        '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
        '[mounts.upstream]\nurl = "http://127.0.0.1:9/mcp"\n')
    return path


@pytest.mark.parametrize(("server_extra", "stack"), [
    ("", "httptools, uvloop"),
    ('event_loop = "asyncio"\nhttp_parser = "h11"\n', "h11, asyncio"),
])
async def test_serve_answers_on_either_stack(tmp_path: Path, server_extra: str,
                                             stack: str) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.cli.main", "serve", "--config",
             str(_config(tmp_path, port, server_extra))],
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    r = await client.post(f"{base}/mcp/demo", json={})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    await asyncio.sleep(0.1)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith('Bearer scope="demo:read"')
        # a malformed request line: the parser answers 400 and the process lives on
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"POST /mcp/demo HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400")
        assert proc.poll() is None
        assert f"with uvicorn ({stack})" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
