"""The official conformance suite's ``authorization`` scenarios against the built-in AS.

``conformance authorization`` checks the metadata endpoint, then prints an authorization URL
and waits for a browser to come back to its callback on 127.0.0.1. A headless user logs in and
approves consent on the real pages, and is sent on to that callback; the suite then redeems the
code at the token endpoint and checks the response.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from bastion.config.load import parse_config
from bastion.passwords import hash_password
from bastion.runtime import build_runtime
from bastion.storage.base import UserRecord
from tests.conformance.harness import CONFORMANCE, require_node_tools, tool_env
from tests.support import HeadlessUser, free_port, serve

pytestmark = pytest.mark.node


async def test_conformance_authorization_scenarios_pass(tmp_path: Path) -> None:
    require_node_tools()
    port, callback_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{callback_port}/callback"
    config = parse_config({
        "data_dir": str(tmp_path / "data"), "server": {"port": port},
        "authorization_server": {"clients": [{
            "client_id": "conformance", "client_name": "Conformance suite",
            "redirect_uris": [callback], "token_endpoint_auth_method": "none"}]},
        "mounts": [{"name": "demo", "path": "/mcp", "scopes": ["demo:read"],
                    "upstream": {"url": "http://127.0.0.1:9/mcp"}}],
    }, source="test")
    runtime = await build_runtime(config, source="test")
    await runtime.extras["store"].create_user(UserRecord(
        "alice", uuid.uuid4().hex, hash_password("correct horse"), time.time()))
    out = tmp_path / "results"
    async with serve(runtime.app, port) as base:
        proc = await asyncio.create_subprocess_exec(
            str(CONFORMANCE), "authorization", "--url", base, "--client-id", "conformance",
            "--resource", base + "/mcp", "-p", str(callback_port), "-o", str(out),
            env=tool_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        printed: list[str] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        break
                    printed.append(line)
                    if line.startswith(base + "/authorize?"):
                        query = await HeadlessUser("alice", "correct horse").authorize(
                            line.strip(), callback)
                        async with httpx.AsyncClient(timeout=10) as http:
                            back = await http.get(callback + "?" + urlencode(query))
                        assert back.status_code == 200
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = "".join(printed)
    assert proc.returncode == 0, text
    results = {}
    for checks in out.rglob("checks.json"):
        for check in json.loads(checks.read_text()):
            results[check["id"]] = check["status"]
    assert results == {"authorization-server-metadata": "SUCCESS",
                       "authorization-server-metadata-cimd": "SUCCESS",
                       "authorization-code-grant": "SUCCESS"}, text
