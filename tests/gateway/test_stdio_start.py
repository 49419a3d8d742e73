"""A stdio command that cannot run fails start-up, naming the mount and the command; every
failure of a stdio upstream carries its cause (the proxy logs it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bastion.gateway.upstream import UpstreamError, UpstreamTimeout
from bastion.gateway.upstream_stdio import StdioUpstream
from tests.gateway.conftest import _gateway
from tests.gateway.stdio_support import Principal, gateway, no_leftover_children, scripted
from tests.support import SigningIssuer

__all__ = ["no_leftover_children"]
pytestmark = pytest.mark.usefixtures("no_leftover_children")

CALL = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pid","_meta":'
        b'{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        b'"io.modelcontextprotocol/clientCapabilities":{}}}}')
MODERN = {"content-type": "application/json", "mcp-protocol-version": "2026-07-28"}


def executable(path: Path, mode: int = 0o755) -> Path:
    path.write_text(f"#!{sys.executable}\n")
    path.chmod(mode)
    return path


async def start_error(upstream: StdioUpstream) -> str:
    with pytest.raises(UpstreamError) as failed:
        await upstream.start()
    await upstream.aclose()
    return str(failed.value)


async def test_a_missing_program_fails_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "server")
    message = await start_error(StdioUpstream("files", [missing, "--flag"], env={}))
    assert message.startswith("mount files: ")
    assert f"command not found: {missing}" in message
    assert f"{missing} --flag" in message


async def test_a_program_that_is_not_executable_fails_start(tmp_path: Path) -> None:
    program = executable(tmp_path / "server", 0o644)
    message = await start_error(StdioUpstream("files", [str(program)], env={}))
    assert f"command is not executable: {program}" in message


async def test_a_bare_name_is_looked_up_on_the_childs_own_path(tmp_path: Path) -> None:
    executable(tmp_path / "my-mcp-server")
    found = StdioUpstream("files", ["my-mcp-server"], env={"PATH": str(tmp_path)})
    await found.start()
    await found.aclose()
    message = await start_error(StdioUpstream("files", ["my-mcp-server"], env={}))
    assert "command not found on the PATH of the server: my-mcp-server" in message


async def test_a_missing_working_directory_fails_start(tmp_path: Path) -> None:
    message = await start_error(StdioUpstream("files", [sys.executable], env={},
                                              cwd=tmp_path / "gone"))
    assert f"working directory does not exist: {tmp_path / 'gone'}" in message


async def test_the_gateway_start_up_fails_naming_the_mount_and_the_command() -> None:
    issuer = SigningIssuer()
    gw = _gateway("http://127.0.0.1:1", issuer, StdioUpstream(
        "demo", ["/nonexistent/bastion-test-binary"], env={}))
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gw({"type": "lifespan"}, receive, send)
    [failed] = sent
    assert failed["type"] == "lifespan.startup.failed"
    assert "mount demo" in failed["message"]
    assert "command not found: /nonexistent/bastion-test-binary" in failed["message"]


async def test_upstream_errors_carry_their_cause(tmp_path: Path) -> None:
    program = executable(tmp_path / "server")
    gone = StdioUpstream("demo", [str(program)], env={})
    await gone.start()
    program.unlink()
    try:
        with pytest.raises(UpstreamError, match=f"command not found: {program}"):
            await gone.request("POST", MODERN, CALL)
    finally:
        await gone.aclose()

    dies = StdioUpstream("demo", [sys.executable, "-c", "import sys; sys.exit(3)"], env={})
    await dies.start()
    try:
        with pytest.raises(UpstreamError, match="exited with status 3"):
            await dies.request("POST", MODERN, CALL)
    finally:
        await dies.aclose()

    silent = StdioUpstream("demo", scripted("--era", "legacy", "--silent-probe"), env={},
                           protocol="2026-07-28", timeout=0.5)
    await silent.start()
    try:
        with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.5 s"):
            await silent.request("POST", MODERN, CALL)
    finally:
        await silent.aclose()


async def test_the_proxy_answers_502_for_a_server_that_dies_in_its_handshake() -> None:
    up = StdioUpstream("demo", [sys.executable, "-c", "import sys; sys.exit(3)"], env={},
                       backoff=0.01)
    async with gateway(up) as stack, Principal(stack, "alice") as alice:
        r = await alice.call("pid")
    assert r.status_code == 502
    assert r.json()["error"]["code"] == -32001
