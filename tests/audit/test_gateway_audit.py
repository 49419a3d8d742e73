"""The gateway's audit trail end to end: allowed calls (decision before the upstream call, then
its outcome), policy denials with the deciding rule, step-ups, refused tokens, stdio spawns —
each record carrying its correlation id, the chain verifying offline with `bastion audit
verify`, and no token or argument value in the clear."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.config.load import load_config
from bastion.runtime import build_runtime
from bastion.server.tokens import mint_access_token
from tests.gateway.test_resource_server import MODERN_HEADERS, call
from tests.support import free_port, serve

POLICY = """
[[rules]]
id = "basics"
effect = "allow"
tools = ["echo", "add"]

[[rules]]
id = "small-sums"
effect = "deny"
tools = "add"
when = "args.a > 100"

[[rules]]
id = "notes-need-write"
effect = "require_scopes"
tools = "write_note"
scopes = ["demo:write"]

[[rules]]
id = "notes"
effect = "allow"
tools = "write_note"
"""


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args],
                          capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Result:
    data: Path
    responses: dict[str, httpx.Response]
    token: str


@pytest.fixture
async def run(tmp_path: Path) -> Result:
    (tmp_path / "policy.toml").write_text(POLICY)
    port = free_port()
    (tmp_path / "bastion.toml").write_text(
        f'data_dir = "data"\n[server]\nport = {port}\n'
        '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
        'policy = "policy.toml"\naudit_keep_arguments = ["title"]\n'
        f'[mounts.upstream]\ncommand = ["{sys.executable}", "-m", "bastion.demo.server"]\n')
    config = load_config(tmp_path / "bastion.toml")
    runtime = await build_runtime(config, source="test")
    responses: dict[str, httpx.Response] = {}
    async with serve(runtime.app, port) as base:
        token, _ = mint_access_token(runtime.extras["keys"], issuer=config.issuer,
                                     subject="alice", client_id="c1",
                                     audience=base + "/mcp/demo", scopes=["demo:read"],
                                     lifetime=300, now=time.time())

        async def send(name: str, tool: str, args: dict[str, Any], tok: str) -> None:
            async with httpx.AsyncClient(timeout=20) as c:
                responses[name] = await c.post(base + "/mcp/demo", json=call(tool, args),
                                               headers={**MODERN_HEADERS,
                                                        "mcp-method": "tools/call",
                                                        "mcp-name": tool,
                                                        "authorization": f"Bearer {tok}"})

        await send("allowed", "echo", {"text": "secret-argument-value"}, token)
        await send("denied", "add", {"a": 500, "b": 1}, token)
        await send("step_up", "write_note", {"title": "kept", "body": "hidden-body"}, token)
        await send("bad_token", "echo", {"text": "x"}, token[:-4] + "AAAA")
    return Result(tmp_path / "data", responses, token)


def records(data: Path) -> list[dict[str, Any]]:
    out = bastion("audit", "export", "--data-dir", str(data), "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [r for r in lines if "kind" in r]  # the rest are signed checkpoints


def by_correlation(recs: list[dict[str, Any]], response: httpx.Response) -> list[dict[str, Any]]:
    cid = response.headers["x-correlation-id"]
    return [r for r in recs if r.get("correlation_id") == cid]


async def test_every_decision_is_recorded_with_its_rule_and_the_chain_verifies(
    run: Result,
) -> None:
    assert run.responses["allowed"].status_code == 200
    recs = records(run.data)
    allowed = by_correlation(recs, run.responses["allowed"])
    assert [r["kind"] for r in allowed] == ["gateway.decision", "gateway.upstream"]
    assert allowed[0]["decision"] == "allow"
    assert allowed[0]["rule"] == "basics"
    issuer = load_config(run.data.parent / "bastion.toml").issuer
    assert allowed[0]["principal"] == {"iss": issuer, "sub": "alice"}
    assert allowed[1]["upstream"]["outcome"] == "ok"

    [denied] = by_correlation(recs, run.responses["denied"])
    assert (denied["decision"], denied["rule"]) == ("deny", "small-sums")

    [step_up] = by_correlation(recs, run.responses["step_up"])
    assert step_up["decision"] == "step-up"
    assert step_up["arguments"]["kept"] == {"title": "kept"}

    [refused] = by_correlation(recs, run.responses["bad_token"])
    assert refused["decision"] == "deny"
    assert "principal" not in refused

    spawns = [r for r in recs if r["kind"] == "gateway.stdio_spawn"]
    assert spawns
    assert spawns[0]["extra"]["command"][-1] == "bastion.demo.server"

    verified = bastion("audit", "verify", "--data-dir", str(run.data))
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_records_hold_no_token_and_no_unkept_argument(run: Result) -> None:
    stored = b"".join(p.read_bytes() for p in run.data.rglob("audit*") if p.is_file())
    assert stored, "the audit store exists"
    for secret in (run.token, run.token.split(".")[2], "secret-argument-value", "hidden-body"):
        assert secret.encode() not in stored
    assert b"kept" in stored


async def test_an_edit_is_found_by_verify(run: Result) -> None:
    import sqlite3

    db = run.data / "audit.db"
    with sqlite3.connect(db) as conn:
        # An attacker with write access to the file first removes the append-only triggers.
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
        for name in names:
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("UPDATE audit_records SET record = replace(record, '\"allow\"', "
                     "'\"deny\"') WHERE record LIKE '%\"allow\"%'")
    out = bastion("audit", "verify", "--data-dir", str(run.data))
    assert out.returncode == 1
    assert "first bad record" in out.stdout + out.stderr


async def test_fail_closed_when_the_audit_trail_is_down(tmp_path: Path) -> None:
    """Invariant 4: when the record cannot be written, the call is refused (503) and the
    upstream is never called."""
    from bastion.demo.server import make_http_app
    from tests.support import Recorder

    recorder = Recorder(make_http_app())
    async with serve(recorder) as upstream:
        port = free_port()
        (tmp_path / "bastion.toml").write_text(
            f'data_dir = "data"\n[server]\nport = {port}\n'
            '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
            f'[mounts.upstream]\nurl = "{upstream}/mcp"\n')
        config = load_config(tmp_path / "bastion.toml")
        runtime = await build_runtime(config, source="test")
        async with serve(runtime.app, port) as base:
            token, _ = mint_access_token(runtime.extras["keys"], issuer=config.issuer,
                                         subject="alice", client_id="c1",
                                         audience=base + "/mcp/demo", scopes=["demo:read"],
                                         lifetime=300, now=time.time())
            await runtime.extras["audit"].close()  # the audit trail goes away
            async with httpx.AsyncClient(timeout=20) as c:
                r = await c.post(base + "/mcp/demo", json=call("echo", {"text": "x"}),
                                 headers={**MODERN_HEADERS, "mcp-method": "tools/call",
                                          "mcp-name": "echo",
                                          "authorization": f"Bearer {token}"})
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "Audit trail unavailable; request refused"
    assert recorder.requests == []


async def test_a_locked_audit_store_refuses_the_call_quickly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process holds audit.db's write lock: the call is refused with a 503 within the
    bounded wait (2 s by default; it was 30 s, and over 60 s for a call queued behind another),
    with a log line naming the store, and the upstream is never called. Once the lock is
    gone, calls go through again."""
    import logging
    import sqlite3

    from bastion.demo.server import make_http_app
    from tests.support import Recorder

    recorder = Recorder(make_http_app())
    async with serve(recorder) as upstream:
        port = free_port()
        (tmp_path / "bastion.toml").write_text(
            f'data_dir = "data"\n[server]\nport = {port}\n'
            '[[mounts]]\nname = "demo"\npath = "/mcp/demo"\nscopes = ["demo:read"]\n'
            f'[mounts.upstream]\nurl = "{upstream}/mcp"\n')
        config = load_config(tmp_path / "bastion.toml")
        runtime = await build_runtime(config, source="test")
        async with serve(runtime.app, port) as base:
            token, _ = mint_access_token(runtime.extras["keys"], issuer=config.issuer,
                                         subject="alice", client_id="c1",
                                         audience=base + "/mcp/demo", scopes=["demo:read"],
                                         lifetime=300, now=time.time())

            async def echo() -> httpx.Response:
                # the client's own limit, far below the 30 s the store used to wait
                async with httpx.AsyncClient(timeout=10) as c:
                    return await c.post(base + "/mcp/demo", json=call("echo", {"text": "x"}),
                                        headers={**MODERN_HEADERS, "mcp-method": "tools/call",
                                                 "mcp-name": "echo",
                                                 "authorization": f"Bearer {token}"})

            other = sqlite3.connect(tmp_path / "data" / "audit.db", isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            try:
                with caplog.at_level(logging.ERROR, logger="bastion.audit"):
                    refused = await echo()
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert refused.status_code == 503
            assert refused.json()["error"]["message"] == "Audit trail unavailable; request refused"
            assert recorder.requests == []
            assert "audit.db: the write lock stayed held by another connection" in caplog.text
            assert (await echo()).status_code == 200
